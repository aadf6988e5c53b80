// The kernel-network checks of `qnet doctor` (see doctor.ts for the framework):
//
//   tun        /dev/net/tun: taps for every kernel network and for -netdev tap/bridge
//   vhost      /dev/vhost-net: in-kernel virtio-net (QEMU works without it, slower)
//   kvm        /dev/kvm usable by the user QEMU runs as
//   helper     QEMU's stock qemu-bridge-helper: setuid root or cap_net_admin, or neither (then
//              only root can use it; `qnet bridge-helper` needs neither)
//   acl        the helper's verdict (bridge.conf) for every bridge that matters
//   forward    net.ipv4.ip_forward (nat, routed and open networks need it; qnet sets it)
//   nft        the nft tool (nat/isolated/routed rules)
//   firewall   drops in other nftables tables at the forward/input hooks: they win over
//              qnet's accepts; bridged traffic through br_netfilter
//
// Device files are read in this process's view (not per namespace); sysctls and nftables
// through the context's runner.
import fs from 'node:fs';
import { aclVerdict, parseAcl } from './bridge-acl.ts';
import type { DoctorCheck, DoctorContext, Finding } from './doctor.ts';
import { hostNative } from './native.ts';
import { foreignDrops, listRuleset, TABLE_PREFIX } from './nft.ts';
import { IP_FORWARD } from './sysctl.ts';
import { describeUid } from './users.ts';

export const HELPER_PATHS = ['/usr/lib/qemu/qemu-bridge-helper', '/usr/libexec/qemu-bridge-helper', '/usr/local/libexec/qemu-bridge-helper'];
const CAP_NET_ADMIN = 12;

function stat(p: string): fs.Stats | null {
  try { return fs.statSync(p); } catch { return null; }
}

/** May `uid` (with gids) open a file for read+write, by its mode bits? */
function canReadWrite(st: fs.Stats, uid: number, gids: number[]): boolean {
  if (uid === 0) return true;
  const m = st.mode;
  if (st.uid === uid) return (m & 0o600) === 0o600;
  if (gids.includes(st.gid)) return (m & 0o060) === 0o060;
  return (m & 0o006) === 0o006;
}

function device(id: string, path: string, what: string, missing: Finding['status'], fixMissing: string, ctx: DoctorContext): Finding {
  const st = stat(path);
  if (!st) return { check: id, status: missing, summary: `${path} is missing: ${what}`, fix: fixMissing };
  if (!st.isCharacterDevice()) return { check: id, status: 'fail', summary: `${path} exists but is not a character device` };
  const rw = canReadWrite(st, ctx.uid, ctx.gids);
  return {
    check: id, status: rw ? 'ok' : 'warn',
    summary: `${path} ${rw ? 'is usable by' : 'cannot be opened by'} ${describeUid(ctx.uid)} (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}:${st.gid})`,
    fix: rw ? undefined : `add the user to group ${st.gid}, or let the root qnet daemon open it and pass it (qnet run does)`,
  };
}

/** cap_net_admin in a file's permitted set (security.capability xattr, any version). */
export function hasNetAdminCap(raw: Buffer | null): boolean {
  if (!raw || raw.length < 12) return false;
  const permittedLo = raw.readUInt32LE(4);
  return (permittedLo & (1 << CAP_NET_ADMIN)) !== 0;
}

export const tunCheck: DoctorCheck = {
  id: 'tun', title: '/dev/net/tun',
  run: (ctx) => [device('tun', '/dev/net/tun', 'no taps, so no kernel networks and no -netdev tap/bridge', 'fail', 'modprobe tun', ctx)],
};

export const vhostCheck: DoctorCheck = {
  id: 'vhost', title: '/dev/vhost-net',
  run: (ctx) => [device('vhost', '/dev/vhost-net', 'QEMU moves virtio-net packets itself (works, slower)', 'info', 'modprobe vhost_net', ctx)],
};

export const kvmCheck: DoctorCheck = {
  id: 'kvm', title: '/dev/kvm',
  run: (ctx) => [device('kvm', '/dev/kvm', 'guests run under TCG (emulation)', 'warn', 'enable virtualization in the firmware, modprobe kvm_intel or kvm_amd', ctx)],
};

export const helperCheck: DoctorCheck = {
  id: 'helper', title: "QEMU's bridge helper",
  run: (ctx) => {
    const found = HELPER_PATHS.filter((p) => stat(p));
    if (!found.length) return [{ check: 'helper', status: 'info', summary: `no qemu-bridge-helper (looked in ${HELPER_PATHS.join(', ')}); qnet bridge-helper does its job` }];
    return found.map((p): Finding => {
      const st = stat(p)!;
      const suid = (st.mode & 0o4000) !== 0 && st.uid === 0;
      let cap = false;
      try { cap = hasNetAdminCap(hostNative().fileCapability(p)); } catch { /* unreadable: treat as none */ }
      if (suid || cap) {
        return { check: 'helper', status: 'ok', summary: `${p} is ${suid ? 'setuid root' : 'given cap_net_admin'}: unprivileged QEMUs can use it for bridges its ACL allows` };
      }
      return {
        check: 'helper', status: ctx.uid === 0 ? 'ok' : 'info',
        summary: `${p} is neither setuid nor given cap_net_admin: only root can use -netdev bridge with it`,
        fix: ctx.uid === 0 ? undefined : 'use helper=qnet-bridge-helper (no setuid needed: the root qnet daemon makes the tap), or setcap cap_net_admin+ep on the stock helper',
      };
    });
  },
};

export const aclCheck: DoctorCheck = {
  id: 'acl', title: 'bridge.conf verdicts',
  run: (ctx) => {
    if (!ctx.bridges.length) return [];
    if (!stat(ctx.aclFile)) {
      return [{ check: 'acl', status: 'info', summary: `${ctx.aclFile} does not exist: the stock helper refuses every bridge`, fix: `qnet bridge-acl allow BRIDGE (or use qnet bridge-helper, which checks the network's allow: list instead)` }];
    }
    const parse = parseAcl(ctx.aclFile);
    return ctx.bridges.map((b): Finding => {
      const v = aclVerdict(b.name, parse, ctx.aclFile);
      return {
        check: 'acl', status: v.allowed ? 'ok' : 'info',
        summary: `stock helper, bridge ${b.name}${b.network ? ` (network ${b.network})` : ''}: ${v.allowed ? 'allowed' : 'refused'}: ${v.reason}`,
        detail: v.ignored.map((p) => `ignored by the helper: ${p.file}${p.line ? `:${p.line}` : ''}: ${p.message}`),
      };
    });
  },
};

export const forwardCheck: DoctorCheck = {
  id: 'forward', title: 'IPv4 forwarding',
  run: async (ctx) => {
    const res = await ctx.runner.exec(['sysctl', '-n', IP_FORWARD]);
    if (res.code !== 0) return [{ check: 'forward', status: 'warn', summary: `cannot read ${IP_FORWARD} on ${ctx.runner.where}: ${res.stderr.trim()}` }];
    const on = res.stdout.trim() === '1';
    return [{ check: 'forward', status: 'ok', summary: `${IP_FORWARD} = ${res.stdout.trim()} on ${ctx.runner.where}${on ? '' : ' (qnet turns it on while a nat, routed or open network runs, and back off after)'}` }];
  },
};

export const nftCheck: DoctorCheck = {
  id: 'nft', title: 'nftables',
  run: async (ctx) => {
    const v = await ctx.runner.exec(['nft', '--version']);
    if (v.code !== 0) return [{ check: 'nft', status: 'fail', summary: 'the nft tool is missing: nat, isolated and routed kernel networks cannot get their rules', fix: 'apt-get install nftables' }];
    const out: Finding[] = [{ check: 'nft', status: 'ok', summary: `${v.stdout.trim()}` }];
    let items;
    try {
      items = await listRuleset(ctx.runner);
    } catch (e) {
      return [...out, { check: 'firewall', status: 'warn', summary: `cannot list the nftables ruleset: ${(e as Error).message}` }];
    }
    const qnetTables = items.flatMap((it) => ('table' in it && it.table && (it.table as { name: string }).name.startsWith(TABLE_PREFIX) ? [(it.table as { name: string }).name] : []));
    if (qnetTables.length) out.push({ check: 'firewall', status: 'info', summary: `qnet's tables: ${qnetTables.join(', ')}` });
    for (const d of foreignDrops(items)) {
      out.push({
        check: 'firewall', status: 'warn',
        summary: `table ${d.table}, chain ${d.chain} (hook ${d.hook}) has ${d.what}: ${d.hook === 'forward' ? 'forwarded guest traffic' : 'guest traffic to the host (DHCP, DNS)'} dropped there is dropped, whatever qnet's own table accepts`,
        fix: `accept the bridge's traffic in that chain (e.g. iifname "BRIDGE" accept; oifname "BRIDGE" accept) or ask its owner (firewalld, docker, ...)`,
      });
    }
    return out;
  },
};

export const brNetfilterCheck: DoctorCheck = {
  id: 'br_netfilter', title: 'br_netfilter',
  run: async (ctx) => {
    const res = await ctx.runner.exec(['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables']);
    if (res.code !== 0 || res.stdout.trim() !== '1') return [];
    return [{
      check: 'br_netfilter', status: 'info',
      summary: 'br_netfilter is loaded with bridge-nf-call-iptables = 1: traffic between guests on a bridge also passes the IP forward hook, so a drop there separates them',
    }];
  },
};

export const kernelNetworkChecks: DoctorCheck[] = [tunCheck, vhostCheck, kvmCheck, helperCheck, aclCheck, forwardCheck, nftCheck, brNetfilterCheck];
