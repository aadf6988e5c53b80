// The daemon's side of kernel networks (a network with `bridge:`): turning a network's config
// into host objects (src/host/kernel-network.ts), its forwards into DNAT rules, and the API's
// tap, ifup/ifdown and authorisation requests into checked host calls.
//
//   start     KernelHost.up (create or adopt the bridge, uplink, forwarding, table), then
//             re-enslave recorded VM taps that lost their bridge (a bridge re-created after a
//             crash), then, for every mode but bridge, the network's services (DHCP and DNS on
//             the bridge: the userspace Network with `bridge` set)
//   stop      the services, then KernelHost.down; on a daemon stop a network whose bridge still
//             has VM ports is kept for them (the kernel carries their traffic)
//   forwards  config forwards and runtime ones (`qnet forward add`) become DNAT rules once their
//             guest has an address (a VM name resolves through the leases); the table is
//             re-applied, in one transaction, whenever that list changes (a lease event)
//   taps      who may have one is decided by the network's `allow:` list against the peer
//             credentials of the API connection (root and the daemon's user always may)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { link } from '../host/ip.ts';
import { KernelHost, emptyHostRecord, type KernelNetworkSpec } from '../host/kernel-network.ts';
import type { KernelMode, NftForward } from '../host/nft.ts';
import { localRunner, type Runner } from '../host/run.ts';
import { checkAllow, describeUid } from '../host/users.ts';
import type { Network } from '../network/network.ts';
import { cidr, type NetworkConfig } from '../config/config.ts';
import { ip4ToString, parseIp4 } from '../wire/addr.ts';
import { logger } from '../util/log.ts';
import type { StateStore } from './state.ts';
import { BadRequestError, ForbiddenError, type ForwardRule, type KernelInfo, type PeerCred, type PortInfo } from './types.ts';

const log = logger('daemon');

/** The bridge helper QEMU runs for `-netdev bridge,helper=` (bin/qnet-bridge-helper). */
export const BRIDGE_HELPER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'qnet-bridge-helper');

export function isKernel(cfg: NetworkConfig): boolean { return cfg.bridge !== undefined; }

/** The host objects a network's config asks for (forwards resolved by the caller). */
export function kernelSpec(cfg: NetworkConfig, forwards: NftForward[]): KernelNetworkSpec {
  const bridgeMode = cfg.mode === 'bridge';
  return {
    network: cfg.name, mode: cfg.mode as KernelMode, bridge: cfg.bridge!, uplink: cfg.uplink, stp: cfg.stp, mtu: cfg.mtu || undefined,
    gateway: bridgeMode ? undefined : { ip: ip4ToString(cfg.gateway), prefix: cfg.prefix },
    subnet: bridgeMode ? undefined : cidr(cfg),
    forwards,
  };
}

export class KernelNetworks {
  readonly host: KernelHost;
  private readonly applied = new Map<string, string>();
  private readonly queue = new Map<string, Promise<void>>();

  constructor(private readonly store: StateStore, runner: Runner = localRunner()) {
    this.host = new KernelHost(runner, (store.state.host ??= emptyHostRecord()), () => store.changed());
  }

  /** Config forwards + runtime ones, with their guests resolved to addresses (unresolved ones wait). */
  forwards(cfg: NetworkConfig, net: Network | null): NftForward[] {
    if (cfg.mode !== 'nat') return [];
    const all: ForwardRule[] = [...cfg.forwards, ...this.store.net(cfg.name).forwards];
    const out: NftForward[] = [];
    for (const f of all) {
      const ip = parseIp4(f.guest) ?? net?.addressOf(f.guest) ?? null;
      if (ip === null) continue;
      out.push({ proto: f.proto, hostAddr: f.hostAddr === '0.0.0.0' ? '' : f.hostAddr, hostPort: f.hostPort, guestIp: ip4ToString(ip), guestPort: f.guestPort });
    }
    return out;
  }

  /** Bring up the host side; returns the bridge's MAC (the services' gateway MAC). */
  async start(cfg: NetworkConfig, net: Network | null): Promise<Buffer> {
    const fwds = this.forwards(cfg, net);
    const did = await this.host.up(kernelSpec(cfg, fwds));
    this.applied.set(cfg.name, JSON.stringify(fwds));
    const rec = this.host.get(cfg.name)!;
    // VM taps recorded but off the bridge (it was re-created): back on
    for (const p of rec.ports) {
      const l = await link(this.host.runner, p.ifname);
      if (l && !l.master && l.kind === 'tun') {
        try { await this.host.addPort(cfg.name, p.ifname, { vm: p.vm, uid: p.uid, mtu: cfg.mtu }); did.push(`re-enslaved ${p.ifname}`); } catch (e) { log.warn('cannot put a VM tap back on its bridge', { network: cfg.name, tap: p.ifname, error: (e as Error).message }); }
      }
    }
    log.info('kernel network up', { network: cfg.name, mode: cfg.mode, bridge: cfg.bridge, done: did.join('; ') });
    if (cfg.mode === 'routed') {
      log.info('routed network: the upstream router needs a route to the subnet through this host', { network: cfg.name, route: `${cidr(cfg)} via <this host's address on the upstream link>` });
    }
    const l = await link(this.host.runner, cfg.bridge!);
    return Buffer.from((l?.address ?? '02:00:00:00:00:01').split(':').map((x) => parseInt(x, 16)));
  }

  /** Re-apply the table when the resolved forwards changed (serialised per network). */
  refresh(cfg: NetworkConfig, net: Network | null): Promise<void> {
    const prev = this.queue.get(cfg.name) ?? Promise.resolve();
    const next = prev.then(async () => {
      if (!this.host.get(cfg.name)) return;
      const fwds = this.forwards(cfg, net);
      const key = JSON.stringify(fwds);
      if (this.applied.get(cfg.name) === key) return;
      await this.host.applyTable(kernelSpec(cfg, fwds));
      this.applied.set(cfg.name, key);
      log.info('forwards applied', { network: cfg.name, forwards: fwds.map((f) => `${f.proto}:${f.hostAddr || '*'}:${f.hostPort}->${f.guestIp}:${f.guestPort}`).join(' ') || 'none' });
    }).catch((e) => { log.error('cannot apply the network\'s forwards', { network: cfg.name, error: (e as Error).message }); });
    this.queue.set(cfg.name, next);
    return next;
  }

  async stop(cfg: NetworkConfig, keepIfPorts: boolean): Promise<void> {
    await this.queue.get(cfg.name);
    this.applied.delete(cfg.name);
    const res = await this.host.down(cfg.name, { keepIfPorts });
    if (res.result === 'kept') log.info('kernel network left up for its VMs; the next qnet up adopts it', { network: cfg.name, bridge: cfg.bridge, vmPorts: res.ports });
    else if (res.result === 'removed') log.info('kernel network removed', { network: cfg.name, bridge: cfg.bridge, problems: res.problems.length ? res.problems.join('; ') : undefined });
  }

  /** The bridge's VM ports as PortInfo (MACs from the bridge's FDB, addresses from leases). */
  async ports(cfg: NetworkConfig, net: Network | null): Promise<PortInfo[]> {
    const leases = net?.dhcp.leases() ?? [];
    return (await this.host.vmPorts(cfg.name)).map((p, i): PortInfo => {
      const addrs = new Set<string>();
      const names = new Set<string>();
      for (const m of p.macs) for (const l of leases) if (l.mac === m) { addrs.add(ip4ToString(l.ip)); if (l.hostname) names.add(l.hostname); }
      return {
        id: i + 1, name: p.ifname, kind: p.kind === 'tun' ? 'tap' : p.kind, peer: cfg.bridge!, macs: p.macs, addresses: [...addrs], hostnames: [...names],
        vm: p.vm, ifname: p.ifname, uid: p.uid, drops: {},
        // a tap's rx is what its VM sent, its tx what the VM is given
        rxFrames: p.stats?.rxPackets ?? 0, rxBytes: p.stats?.rxBytes ?? 0, txFrames: p.stats?.txPackets ?? 0, txBytes: p.stats?.txBytes ?? 0,
        rxDropped: p.stats?.rxDropped ?? 0, txDropped: p.stats?.txDropped ?? 0,
      };
    });
  }

  async info(cfg: NetworkConfig): Promise<KernelInfo> {
    const st = await this.host.status(cfg.name);
    return {
      bridge: cfg.bridge!, exists: st?.exists ?? false, createdBridge: st?.createdBridge ?? false, uplink: st?.uplink, mac: st?.mac, stp: st?.stp,
      rules: st?.table ? { table: `ip qnet-${cfg.name}`, chains: st.table.chains, rules: st.table.rules, packets: st.table.packets } : null,
      forwarding: st?.forwarding ?? '?', allow: cfg.allow,
    };
  }

  /** May `who` attach VMs to this network? Throws ForbiddenError with the reason. */
  static mayAttach(cfg: NetworkConfig, who: PeerCred | null): void {
    if (!who) return;
    const v = checkAllow(cfg.allow, who);
    if (!v.allowed) throw new ForbiddenError(`${describeUid(who.uid)} may not attach VMs to network '${cfg.name}': ${v.reason}`);
  }

  /** Open /dev/vhost-net for a client that cannot (it is root's, 0600), if it exists. */
  static vhostFd(): number | null {
    try { return fs.openSync('/dev/vhost-net', fs.constants.O_RDWR); } catch { return null; }
  }

}

export function badKernelOp(what: string, cfg: NetworkConfig): never {
  throw new BadRequestError(`${what} is not available on kernel network '${cfg.name}' (bridge ${cfg.bridge}); the kernel carries its packets: ${what === 'capture' ? `use tcpdump -i ${cfg.bridge}` : 'see qnet net show'}`);
}
