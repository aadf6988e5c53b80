// Tap devices of kernel networks: one per VM port.
//
//   createVmTap   qnet makes the tap (native TUNSETIFF, owned by the VM's user, with a vnet
//                 header when the kernel has one), enslaves it to the bridge with the network's
//                 MTU, and returns its descriptor for QEMU (`-netdev tap,fd=N`). The tap is not
//                 persistent: it goes away by itself when the last descriptor closes, i.e. when
//                 QEMU exits, so a VM that dies leaves nothing behind, and a daemon restart does
//                 not disturb it (the kernel keeps forwarding; the daemon only reads it back).
//   enslaveTap    a tap somebody else made (QEMU's own, for `-netdev tap,script=qnet-ifup`):
//                 MTU, bridge, up. releaseTap takes it off the bridge again.
//
// Taps qnet creates carry the alias `qnet:NETWORK/VM`, so `qnet net show` and a restarted
// daemon know which VM each port belongs to even with no state. Names are `qn-VM` (cut and
// suffixed with a hash when longer than the 15 bytes Linux allows).
import crypto from 'node:crypto';
import { ALIAS_PREFIX } from './bridge.ts';
import { ipBatch, link, type LinkInfo } from './ip.ts';
import type { Runner } from './run.ts';
import { hostNative } from './native.ts';

const IFF_VNET_HDR = 0x4000;

/** `qnet:NET/VM` */
export function tapAlias(network: string, vm: string): string { return `${ALIAS_PREFIX}${network}/${vm}`; }

/** The network and VM in a tap's qnet alias. */
export function tapOwner(l: Pick<LinkInfo, 'ifalias'>): { network: string; vm: string } | undefined {
  if (!l.ifalias?.startsWith(ALIAS_PREFIX)) return undefined;
  const rest = l.ifalias.slice(ALIAS_PREFIX.length);
  const i = rest.indexOf('/');
  return i > 0 ? { network: rest.slice(0, i), vm: rest.slice(i + 1) } : undefined;
}

/** A tap name for a VM: `qn-VM`, or `qn-VMPREFIX-HASH` when that is over 15 bytes; `n` > 0 varies it. */
export function vmTapName(vm: string, n = 0): string {
  const clean = vm.replace(/[^A-Za-z0-9_.-]/g, '_');
  const plain = `qn-${clean}`;
  if (plain.length <= 15 && n === 0) return plain;
  const h = crypto.createHash('sha256').update(`${vm}\0${n}`).digest('hex').slice(0, 4);
  return `qn-${clean.slice(0, 7)}-${h}`;
}

let vnetSupport: boolean | undefined;
/** Whether /dev/net/tun offers IFF_VNET_HDR (virtio offloads through the tap). */
export function tunHasVnetHdr(): boolean {
  if (vnetSupport === undefined) {
    try { vnetSupport = (hostNative().tunFeatures() & IFF_VNET_HDR) !== 0; } catch { vnetSupport = false; }
  }
  return vnetSupport;
}

export interface VmTapSpec {
  network: string;
  vm: string;
  bridge: string;
  mtu?: number;
  /** uid/gid that may open the tap again by name (TUNSETOWNER/TUNSETGROUP) */
  owner?: number;
  group?: number;
  /** default: when the kernel supports it */
  vnetHdr?: boolean;
  /** an exact name (default: vmTapName(vm)) */
  name?: string;
}

export interface VmTap { name: string; fd: number; vnetHdr: boolean }

/**
 * Create a VM's tap in this process's namespace and put it on the bridge. The caller owns the
 * returned fd (hand it over, then close it). Throws with the reason (and removes the tap) when
 * any step fails.
 */
export async function createVmTap(r: Runner, spec: VmTapSpec): Promise<VmTap> {
  if (r.netns) throw new Error(`createVmTap: taps are made in this process's own namespace, not in ${r.where}; run qnet inside it`);
  let name = spec.name;
  if (!name) {
    for (let n = 0; ; n++) {
      const cand = vmTapName(spec.vm, n);
      if (!(await link(r, cand))) { name = cand; break; }
      if (n > 20) throw new Error(`no free tap name for VM ${spec.vm} (tried ${vmTapName(spec.vm)} and 20 more)`);
    }
  }
  const vnetHdr = spec.vnetHdr ?? tunHasVnetHdr();
  let fd: number;
  let actual: string;
  try {
    [fd, actual] = hostNative().createTap(name, { vnetHdr, owner: spec.owner ?? -1, group: spec.group ?? -1, persist: false });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const hint = code === 'EPERM' || code === 'EACCES' ? ' (creating taps needs root or CAP_NET_ADMIN)'
      : code === 'EBUSY' ? ' (a tap of that name is in use by another process)'
      : code === 'ENOENT' || code === 'ENODEV' ? ' (no /dev/net/tun: load the tun module)' : '';
    throw new Error(`cannot create tap ${name} for VM ${spec.vm}: ${(e as Error).message}${hint}`);
  }
  try {
    const set = ['link', 'set', 'dev', actual];
    if (spec.mtu) set.push('mtu', String(spec.mtu));
    set.push('alias', tapAlias(spec.network, spec.vm));
    await ipBatch(r, [set, ['link', 'set', 'dev', actual, 'master', spec.bridge], ['link', 'set', 'dev', actual, 'up']]);
  } catch (e) {
    hostNative().closeFd(fd); // not persistent: closing removes it
    throw e;
  }
  return { name: actual, fd, vnetHdr };
}

/** Put an existing tap (e.g. one QEMU made) on the bridge: MTU, master, up. */
export async function enslaveTap(r: Runner, name: string, bridge: string, mtu?: number): Promise<LinkInfo> {
  const l = await link(r, name);
  if (!l) throw new Error(`no interface '${name}' on ${r.where}`);
  if (l.kind !== 'tun') throw new Error(`'${name}' is not a tap device (it is ${l.kind ? `a ${l.kind}` : 'a physical NIC'}); qnet ifup only takes taps`);
  if (l.master && l.master !== bridge) throw new Error(`tap '${name}' is already a port of bridge ${l.master}; take it off first (ip link set ${name} nomaster)`);
  const cmds: string[][] = [];
  if (mtu && l.mtu !== mtu) cmds.push(['link', 'set', 'dev', name, 'mtu', String(mtu)]);
  if (l.master !== bridge) cmds.push(['link', 'set', 'dev', name, 'master', bridge]);
  cmds.push(['link', 'set', 'dev', name, 'up']);
  await ipBatch(r, cmds);
  return (await link(r, name)) ?? l;
}

/** Take a tap off its bridge (if it still exists). */
export async function releaseTap(r: Runner, name: string): Promise<boolean> {
  const l = await link(r, name);
  if (!l || !l.master) return false;
  await ipBatch(r, [['link', 'set', 'dev', name, 'nomaster']]);
  return true;
}
