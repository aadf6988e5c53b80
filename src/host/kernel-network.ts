// A kernel network's host objects, composed: the bridge, its uplink (mode bridge), forwarding,
// the nftables table and the VM ports. KernelHost owns the records of every kernel network of
// one daemon (they live in the state directory) and reconciles them with the kernel:
//
//   up      create what is missing, adopt what qnet made before (a bridge with its alias, a
//           moved uplink, a table: replaced in one transaction, never duplicated), refuse what
//           somebody else made under the same name (except an existing host bridge in mode
//           bridge, which is used as is and never deleted)
//   down    remove what qnet created and nothing else: the table, the uplink move (addresses
//           and routes back on the NIC), the bridge, and forwarding when no other network
//           needs it (back to the value found, if still ours). With keepIfPorts, a network
//           whose bridge still has VM ports is left running for them (the kernel carries their
//           traffic; the next up adopts it), so a daemon restart does not cut guests off.
//   ports   the bridge's ports with the MACs the bridge learned on them, and the VM each
//           belongs to (tap aliases `qnet:NET/VM`, or what ifup/bridge-helper recorded)
//
// Events: setForwards() re-applies the table (runtime forwards, a lease that moves a VM);
// VM taps come and go by themselves (non-persistent taps vanish with QEMU), so ports() is read
// from the kernel each time. Every kernel change goes through the Runner (run.ts).
import { createBridge, deleteBridge, inspectBridge, learnedMacs, reconcileBridge, aliasOwner, bridgeMac } from './bridge.ts';
import { link, links, type LinkInfo } from './ip.ts';
import { applyRuleset, inspectRuleset, modeHasRules, removeRuleset, type KernelMode, type NftForward, type TableInfo } from './nft.ts';
import type { Runner } from './run.ts';
import { ensureSysctl, IP_FORWARD, restoreSysctl, type SysctlChange } from './sysctl.ts';
import { createVmTap, enslaveTap, releaseTap, tapOwner, type VmTap } from './tap.ts';
import { isMoved, moveBack, moveToBridge, readUplink, recoverRecord, type UplinkRecord } from './uplink.ts';
import { logger } from '../util/log.ts';

const log = logger('host');

export interface KernelNetworkSpec {
  network: string;
  mode: KernelMode;
  bridge: string;
  uplink?: string;
  stp?: boolean;
  /** 0/undefined: leave it (mode bridge: the uplink's) */
  mtu?: number;
  /** the gateway address on the bridge (not in mode bridge) */
  gateway?: { ip: string; prefix: number };
  /** CIDR of the guests' subnet (not in mode bridge) */
  subnet?: string;
  forwards?: NftForward[];
}

export interface PortRecord {
  ifname: string;
  vm?: string;
  /** who asked for it (peer credentials) */
  uid?: number;
  /** how it joined: a tap qnet made (qnet run, bridge-helper), or QEMU's own tap (ifup) */
  via: 'tap' | 'ifup';
}

/** What the state directory keeps about one kernel network. */
export interface KernelRecord {
  network: string;
  mode: KernelMode;
  bridge: string;
  /** qnet created the bridge (and deletes it on stop) */
  createdBridge: boolean;
  uplink?: UplinkRecord;
  /** qnet applied a table for it */
  table: boolean;
  /** it needs IPv4 forwarding */
  forwarding: boolean;
  ports: PortRecord[];
}

/** Everything a daemon keeps about the host: the forwarding change and each network. */
export interface HostRecord {
  forwarding: SysctlChange | null;
  networks: Record<string, KernelRecord>;
}

export function emptyHostRecord(): HostRecord { return { forwarding: null, networks: {} }; }

export interface PortView {
  ifname: string;
  kind: string;
  vm?: string;
  uid?: number;
  macs: string[];
  mtu: number;
  up: boolean;
  stats?: LinkInfo['stats'];
}

export interface KernelStatus {
  bridge: string;
  exists: boolean;
  createdBridge: boolean;
  uplink?: string;
  mtu?: number;
  stp?: boolean;
  mac?: string;
  table: TableInfo | null;
  forwarding: string;
}

const needsForwarding = (m: KernelMode): boolean => m === 'nat' || m === 'routed' || m === 'open';

export class KernelHost {
  constructor(readonly runner: Runner, readonly record: HostRecord, private readonly changed: () => void = () => {}) {}

  get(network: string): KernelRecord | undefined { return this.record.networks[network]; }

  /** Create or adopt a network's objects; returns what was done, for the log. */
  async up(spec: KernelNetworkSpec): Promise<string[]> {
    const r = this.runner;
    const did: string[] = [];
    let prev: KernelRecord | undefined = this.record.networks[spec.network];
    if (prev && (prev.bridge !== spec.bridge || prev.mode !== spec.mode || prev.uplink?.nic !== spec.uplink)) {
      // the config moved the network to another bridge, mode or uplink: undo the old setup first
      const gone = await this.down(spec.network, { keepIfPorts: false });
      did.push(`removed the previous setup on ${prev.bridge}${gone.problems.length ? ` (${gone.problems.join('; ')})` : ''}`);
      prev = undefined;
    }
    const st = await inspectBridge(r, spec.bridge);
    let created = prev?.createdBridge ?? false;
    const addr = spec.mode === 'bridge' ? undefined : spec.gateway;
    if (st.exists) {
      if (!st.isBridge) throw new Error(`network '${spec.network}': ${spec.bridge} exists and is not a bridge; pick another bridge: name`);
      if (st.owner && st.owner !== spec.network) throw new Error(`network '${spec.network}': bridge ${spec.bridge} belongs to qnet network '${st.owner}' (its alias says so); give this network another bridge: name`);
      if (!st.owner) {
        if (spec.mode !== 'bridge' || spec.uplink) {
          throw new Error(`network '${spec.network}': bridge ${spec.bridge} exists and qnet did not create it; ${spec.mode === 'bridge' ? 'drop uplink: to use it as it is, or ' : ''}pick another bridge: name (or delete it: ip link del ${spec.bridge})`);
        }
        created = false;
        did.push(`using existing bridge ${spec.bridge}`);
      } else {
        created = true;
        const fixed = await reconcileBridge(r, { name: spec.bridge, network: spec.network, mtu: spec.mtu || undefined, stp: spec.stp ?? false, addr }, st);
        did.push(`adopted bridge ${spec.bridge}${fixed.length ? ` (${fixed.join(', ')})` : ''}`);
      }
    } else {
      if (spec.mode === 'bridge' && !spec.uplink) throw new Error(`network '${spec.network}': bridge ${spec.bridge} does not exist; create it, or add uplink: NIC so qnet makes it from that NIC`);
      let mac = bridgeMac(spec.network);
      let mtu = spec.mtu || undefined;
      if (spec.uplink) {
        const u = await link(r, spec.uplink);
        if (!u) throw new Error(`network '${spec.network}': uplink ${spec.uplink} does not exist on ${r.where}`);
        mac = u.address ?? mac;
        mtu = mtu ?? u.mtu;
      }
      await createBridge(r, { name: spec.bridge, network: spec.network, mtu, stp: spec.stp ?? false, mac, addr });
      created = true;
      did.push(`created bridge ${spec.bridge}`);
    }
    const rec: KernelRecord = {
      network: spec.network, mode: spec.mode, bridge: spec.bridge, createdBridge: created, uplink: prev?.uplink,
      table: false, forwarding: needsForwarding(spec.mode), ports: prev?.ports ?? [],
    };
    this.record.networks[spec.network] = rec;
    this.changed();
    try {
      if (spec.uplink) {
        if (await isMoved(r, spec.uplink, spec.bridge)) {
          rec.uplink ??= await recoverRecord(r, spec.uplink, spec.bridge);
          did.push(`uplink ${spec.uplink} already on the bridge`);
        } else {
          const u = await readUplink(r, spec.uplink, spec.bridge);
          rec.uplink = u;
          this.changed();
          await moveToBridge(r, u);
          did.push(`moved ${spec.uplink} (${u.addrs.map((a) => `${a.local}/${a.prefixlen}`).join(', ') || 'no addresses'}) onto the bridge`);
        }
      }
      if (rec.forwarding) {
        const c = await ensureSysctl(r, IP_FORWARD, '1');
        if (c && !this.record.forwarding) this.record.forwarding = c;
        if (c) did.push('IPv4 forwarding on');
      }
      if (spec.mode === 'nat' || spec.mode === 'routed') {
        // guests are on-link for each other: no ICMP redirects when the host hairpins
        await r.exec(['sysctl', '-q', '-w', `net.ipv4.conf.${spec.bridge.replace(/\./g, '/')}.send_redirects=0`]);
      }
      await this.applyTable(spec);
      if (rec.table) did.push('nftables table replaced');
    } finally {
      this.changed();
    }
    return did;
  }

  /** (Re)apply the network's nftables table (atomic replace), or remove one a mode change left. */
  async applyTable(spec: KernelNetworkSpec): Promise<void> {
    const rec = this.record.networks[spec.network];
    if (modeHasRules(spec.mode)) {
      if (!spec.subnet) throw new Error(`network '${spec.network}': mode ${spec.mode} needs a subnet for its rules`);
      await applyRuleset(this.runner, { network: spec.network, bridge: spec.bridge, subnet: spec.subnet, mode: spec.mode, forwards: spec.forwards });
      if (rec) rec.table = true;
    } else {
      await removeRuleset(this.runner, spec.network);
      if (rec) rec.table = false;
    }
    this.changed();
  }

  /** VM ports on the bridge right now (taps and ifup'd devices; not the uplink). */
  async vmPorts(network: string): Promise<PortView[]> {
    const rec = this.record.networks[network];
    if (!rec) return [];
    const all = await links(this.runner);
    // VM ports are taps (the uplink, or a host bridge's own NICs, are not)
    const onBridge = all.filter((l) => l.master === rec.bridge && l.kind === 'tun' && l.ifname !== rec.uplink?.nic);
    let fdb: { mac: string; port: string }[] = [];
    try { fdb = await learnedMacs(this.runner, rec.bridge); } catch { /* no bridge tool: no MACs */ }
    // forget ports that are gone (their QEMU exited)
    const names = new Set(onBridge.map((l) => l.ifname));
    const before = rec.ports.length;
    rec.ports = rec.ports.filter((p) => names.has(p.ifname));
    if (rec.ports.length !== before) this.changed();
    return onBridge.map((l) => {
      const known = rec.ports.find((p) => p.ifname === l.ifname);
      return {
        ifname: l.ifname, kind: l.kind ?? 'nic', vm: known?.vm ?? tapOwner(l)?.vm, uid: known?.uid,
        macs: fdb.filter((e) => e.port === l.ifname).map((e) => e.mac), mtu: l.mtu, up: l.flags.includes('UP'), stats: l.stats,
      };
    });
  }

  /** A tap for a VM, on the network's bridge; the caller hands its fd on and closes it. */
  async createTap(network: string, vm: string, opts: { uid?: number; gid?: number; mtu?: number; vnetHdr?: boolean }): Promise<VmTap> {
    const rec = this.mustGet(network);
    const tap = await createVmTap(this.runner, { network, vm, bridge: rec.bridge, mtu: opts.mtu || undefined, owner: opts.uid, group: opts.gid, vnetHdr: opts.vnetHdr });
    rec.ports = rec.ports.filter((p) => p.ifname !== tap.name);
    rec.ports.push({ ifname: tap.name, vm, uid: opts.uid, via: 'tap' });
    this.changed();
    return tap;
  }

  /** A tap QEMU made (qnet ifup): onto the bridge. */
  async addPort(network: string, ifname: string, opts: { vm?: string; uid?: number; mtu?: number }): Promise<void> {
    const rec = this.mustGet(network);
    await enslaveTap(this.runner, ifname, rec.bridge, opts.mtu || undefined);
    rec.ports = rec.ports.filter((p) => p.ifname !== ifname);
    rec.ports.push({ ifname, vm: opts.vm, uid: opts.uid, via: 'ifup' });
    this.changed();
  }

  /** qnet ifdown: off the bridge. */
  async removePort(network: string, ifname: string): Promise<boolean> {
    const rec = this.mustGet(network);
    const had = rec.ports.some((p) => p.ifname === ifname);
    rec.ports = rec.ports.filter((p) => p.ifname !== ifname);
    this.changed();
    const released = await releaseTap(this.runner, ifname);
    return had || released;
  }

  async status(network: string): Promise<KernelStatus | null> {
    const rec = this.record.networks[network];
    if (!rec) return null;
    const st = await inspectBridge(this.runner, rec.bridge);
    let table: TableInfo | null = null;
    if (rec.table) { try { table = await inspectRuleset(this.runner, network); } catch { table = null; } }
    let forwarding = '?';
    try { forwarding = (await this.runner.exec(['sysctl', '-n', IP_FORWARD])).stdout.trim(); } catch { /* unknown */ }
    return { bridge: rec.bridge, exists: st.exists, createdBridge: rec.createdBridge, uplink: rec.uplink?.nic, mtu: st.mtu, stp: st.stp, mac: st.mac, table, forwarding };
  }

  /**
   * Remove what qnet made for the network. With keepIfPorts and VM ports on the bridge nothing
   * is touched and 'kept' is returned (the record stays for the next start to adopt).
   */
  async down(network: string, opts: { keepIfPorts: boolean }): Promise<{ result: 'removed' | 'kept' | 'unknown'; ports: number; problems: string[] }> {
    const rec = this.record.networks[network];
    if (!rec) return { result: 'unknown', ports: 0, problems: [] };
    const r = this.runner;
    const problems: string[] = [];
    const ports = (await this.vmPorts(network).catch(() => [])).length;
    if (opts.keepIfPorts && ports > 0) return { result: 'kept', ports, problems };
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try { await fn(); } catch (e) { problems.push(`${what}: ${(e as Error).message}`); }
    };
    if (rec.table) await step('remove the nftables table', () => removeRuleset(r, network));
    if (rec.uplink) {
      const u = rec.uplink;
      await step(`move ${u.nic} back`, async () => { problems.push(...(await moveBack(r, u))); });
    }
    if (rec.createdBridge) {
      await step(`delete bridge ${rec.bridge}`, async () => {
        const l = await link(r, rec.bridge);
        if (l && aliasOwner(l) === network) await deleteBridge(r, rec.bridge);
        else if (l) problems.push(`bridge ${rec.bridge} no longer carries qnet's alias for ${network}; left it`);
      });
    } else {
      for (const p of rec.ports) if (p.via === 'ifup') await step(`release ${p.ifname}`, () => releaseTap(r, p.ifname));
    }
    delete this.record.networks[network];
    this.changed();
    await this.releaseForwarding();
    if (problems.length) log.warn('network teardown left problems', { network, problems: problems.join('; ') });
    return { result: 'removed', ports, problems };
  }

  /** Put forwarding back once no remaining network needs it. */
  private async releaseForwarding(): Promise<void> {
    const c = this.record.forwarding;
    if (!c || Object.values(this.record.networks).some((n) => n.forwarding)) return;
    try {
      if (!(await restoreSysctl(this.runner, c))) log.info('IPv4 forwarding was changed by someone else meanwhile; left as it is');
    } catch (e) {
      log.warn('cannot restore IPv4 forwarding', { error: (e as Error).message, value: c.before });
    }
    this.record.forwarding = null;
    this.changed();
  }

  /** Networks in the record but no longer configured: remove them (after a config change or crash). */
  async pruneExcept(keep: Set<string>): Promise<string[]> {
    const gone: string[] = [];
    for (const name of Object.keys(this.record.networks)) {
      if (keep.has(name)) continue;
      await this.down(name, { keepIfPorts: false });
      gone.push(name);
    }
    return gone;
  }

  private mustGet(network: string): KernelRecord {
    const rec = this.record.networks[network];
    if (!rec) throw new Error(`network '${network}' is not a running kernel network`);
    return rec;
  }
}

