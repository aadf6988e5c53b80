// The qnet daemon: runs every configured network, keeps their state across restarts, and
// answers the control API (DaemonControl). Reloading the config (SIGHUP) restarts only the
// networks whose configuration changed; the others keep their guests and flows.
//
// Kernel networks (`bridge:`, kernel.ts) have host objects next to (or, in mode bridge,
// instead of) the userspace Network that serves their DHCP and DNS. Stopping the daemon keeps
// a kernel network that VMs still use (their packets never pass through qnet); the next start
// adopts it. Other users reach the API when a network allows them, each request checked by
// the peer credentials of its connection (authorize()). VF pools (`mode: hostdev`,
// hostdev.ts) have no Network at all: the daemon hands SR-IOV VFs, bound to vfio-pci, to
// `qnet run` and takes them back when the VM is gone.
//
// At start it raises the soft descriptor limit to the hard one and splits it (util/fds.ts):
// a reserve sized from what the API, the attach sockets, DNS and TFTP can hold at most, and
// the rest for guest flows (`fdBudget`, handed to every network). A start that fails part
// way stops what did start (every network, listener and socket), so the caller can exit.
import fs from 'node:fs';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import { Network, type NetworkOptions } from '../network/network.ts';
import { userNetworkOptions } from '../qemu/user-network.ts';
import { cidr, type Config, type NetworkConfig } from '../config/config.ts';
import { StateStore } from './state.ts';
import { HostdevNetworks } from './hostdev.ts';
import type { Host } from '../host/pci/sysfs.ts';
import { ip4ToString, ip6ToString, parseIp4 } from '../wire/addr.ts';
import { addrToString, inPrefix6, parseAddr } from '../stack/addr.ts';
import net from 'node:net';
import { qemuNetdevFor } from '../link/endpoint.ts';
import type { Port } from '../link/port.ts';
import type { PcapWriter } from '../switch/pcap.ts';
import { logger } from '../util/log.ts';
import { LimitLog } from '../util/limits.ts';
import { FdBudget, reserveFor, type NofileLimits } from '../util/fds.ts';
import { renderMetrics } from './metrics.ts';
import { sys } from '../link/sys.ts';
import { STREAM_MAX_CONNECTIONS } from '../link/stream.ts';
import { apiDescriptorReserve } from './api-limits.ts';
import { describeUid } from '../host/users.ts';
import { BRIDGE_HELPER, KernelNetworks, badKernelOp, isKernel } from './kernel.ts';
import {
  BadRequestError, ForbiddenError, NotFoundError,
  type AttachResult, type ForwardRequest, type DaemonControl, type ForwardInfo, type ForwardRule, type LeaseInfo, type NetworkInfo,
  type PeerCred, type PortInfo, type StatusInfo, type TapRequest, type TapResult, type VmRecord,
} from './types.ts';

const log = logger('daemon');
const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
export const DEFAULT_MODEL = 'virtio-net-pci';

interface Running {
  cfg: NetworkConfig;
  /** the config as JSON: what reload compares */
  key: string;
  /** the userspace network; for a kernel network its DHCP/DNS; none in mode bridge */
  net: Network | null;
}

/** `proto:hostAddr:hostPort`, an IPv6 host address in brackets (tcp:[::1]:8022). */
function forwardId(proto: string, hostAddr: string, hostPort: number): string {
  const a = hostAddr || '0.0.0.0';
  return `${proto}:${a.includes(':') ? `[${a}]` : a}:${hostPort}`;
}

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** A MAC derived from the network and VM names (stable), re-derived while it is taken (unique). */
export function deriveMac(network: string, name: string, taken: Set<string>): string {
  for (let i = 0; ; i++) {
    const h = crypto.createHash('sha256').update(`${network}\0${name}\0${i}`).digest();
    const mac = `52:54:00:${[h[0], h[1], h[2]].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
    if (!taken.has(mac)) return mac;
  }
}

/** A network's `limits:` as its options. */
function limitOptions(cfg: NetworkConfig): Partial<NetworkOptions> {
  const l = cfg.limits;
  return {
    maxLeasesPerPort: l.leasesPerPort, maxConnsPerGuest: l.connectionsPerPort, maxHalfOpenPerPort: l.halfOpenPerPort, maxUdpFlowsPerPort: l.udpFlowsPerPort,
    maxPingFlowsPerPort: l.pingFlowsPerPort, maxAddrsPerPort: l.addressesPerPort, maxAddrs6PerPort: l.addresses6PerPort, sourceGuard: l.sourceGuard,
  };
}

export function networkOptions(cfg: NetworkConfig): NetworkOptions {
  if (cfg.mode === 'user') {
    return {
      ...userNetworkOptions({ config: cfg.user!.config, dnsUpstreams: cfg.upstreams, mtu: cfg.mtu, listen: cfg.attach, connect: cfg.connect, pcap: cfg.pcap, name: cfg.name }),
      forwards: [...cfg.user!.config.hostfwd, ...cfg.forwards],
      ...limitOptions(cfg),
    };
  }
  return {
    name: cfg.name,
    mode: cfg.mode,
    net: cfg.net,
    prefix: cfg.prefix,
    gateway: cfg.gateway,
    dns: cfg.gateway,
    dhcpStart: cfg.dhcpStart,
    dhcpSize: cfg.dhcpEnd - cfg.dhcpStart + 1,
    leaseTime: cfg.leaseTime,
    staticHosts: cfg.hosts.filter((h) => h.mac).map((h) => ({ mac: h.mac, ip: h.ip, hostname: h.name })),
    domain: cfg.domain,
    dnsSearch: cfg.domain ? [cfg.domain] : undefined,
    records: cfg.records.map((rec) => ({ name: rec.name, ip: rec.ip ?? parseAddr(rec.ip6!)! })),
    upstreams: cfg.upstreams,
    mtu: cfg.mtu,
    // a kernel network's forwards are DNAT rules (kernel.ts), not listening sockets
    forwards: isKernel(cfg) ? [] : cfg.forwards,
    listen: cfg.attach,
    ...limitOptions(cfg),
    ipv6: cfg.ipv6 ? {
      prefix: cfg.ipv6.prefix, prefixLen: cfg.ipv6.prefixLen, router: cfg.ipv6.gateway, dns: cfg.ipv6.gateway, dhcpRange: cfg.ipv6.dhcpRange,
      hosts: cfg.hosts.filter((h) => h.ip6 && h.mac).map((h) => ({ mac: h.mac, ip: h.ip6!, hostname: h.name })),
    } : undefined,
  };
}

/** The soft and hard RLIMIT_NOFILE, raised if the addon can (-1: unlimited). */
export function raiseNofile(): NofileLimits & { raisedBy: 'qnet' | 'unchanged' | 'unknown' } {
  try {
    const [before, soft, hard] = sys().raiseNofile();
    return { before, soft, hard, raisedBy: soft !== before ? 'qnet' : 'unchanged' };
  } catch {
    // no addon: report what the process has (Node raises the soft limit itself at start)
    try {
      const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
      const n = (x: string | undefined): number => (x === undefined || x === 'unlimited' ? -1 : Number(x));
      if (m) return { before: n(m[1]), soft: n(m[1]), hard: n(m[2]), raisedBy: 'unknown' };
    } catch { /* not Linux */ }
    return { before: -1, soft: -1, hard: -1, raisedBy: 'unknown' };
  }
}

/** Descriptors qnet's own work can hold at most with this config (see fdBudget). */
export function descriptorNeeds(config: Config): number {
  // stdio, the loader, epoll/eventfds, the state file, the addon's handles
  let n = 64 + apiDescriptorReserve(!!config.api.tcp);
  for (const c of config.networks) {
    n += c.attach.length * (STREAM_MAX_CONNECTIONS + 1) // each attach socket and its connections
      + 2 * 64 // DNS upstream sockets, per family
      + 64 // TFTP transfers
      + c.forwards.length + 16; // forward listeners, VM connections, guestfwd
  }
  return n;
}

export class Daemon implements DaemonControl {
  private readonly running = new Map<string, Running>();
  private readonly store: StateStore;
  private readonly started = Date.now();
  private readonly captures = new Set<{ stop(): void }>();
  private readonly kernel: KernelNetworks;
  /** mode hostdev networks (VF pools) */
  private readonly hostdev: HostdevNetworks;
  apiSocket = '';
  /** limit hits outside any network (the API's connection caps) */
  readonly limits = new LimitLog(log);
  readonly nofile: NofileLimits;
  /** the descriptors guest flows may use together; the rest is qnet's own reserve */
  readonly fdBudget: FdBudget;

  private constructor(public config: Config, opts: { host?: () => Host }) {
    fs.mkdirSync(config.runtimeDir, { recursive: true, mode: 0o700 });
    this.store = new StateStore(config.stateDir);
    this.store.load();
    const lim = raiseNofile();
    this.nofile = lim;
    const limit = lim.soft < 0 ? 1 << 20 : lim.soft;
    this.fdBudget = new FdBudget(limit, reserveFor(limit, descriptorNeeds(config)));
    log.info('descriptor budget', {
      limit: lim.soft < 0 ? 'unlimited' : lim.soft, hard: lim.hard < 0 ? 'unlimited' : lim.hard,
      raisedFrom: lim.raisedBy === 'qnet' ? lim.before : undefined,
      reserved: this.fdBudget.reserve, guestFlows: this.fdBudget.flows,
    });
    if (this.fdBudget.flows < 4096) log.warn('the descriptor limit leaves little room for guest connections; raise the hard limit (ulimit -Hn, LimitNOFILE= in a systemd unit)', { guestFlows: this.fdBudget.flows });
    this.kernel = new KernelNetworks(this.store);
    this.hostdev = new HostdevNetworks(this.store, config.stateDir, opts.host);
  }

  /** Other users may reach the API: some kernel network allows them. */
  get sharedApi(): boolean { return this.config.networks.some((n) => n.allow.length > 0); }

  /** `host`: the kernel hostdev networks act on (default: this machine's /sys) */
  static async start(config: Config, opts: { host?: () => Host } = {}): Promise<Daemon> {
    const d = new Daemon(config, opts);
    try {
      // kernel objects of networks no longer configured as kernel networks (config changed while down)
      const gone = await d.kernel.host.pruneExcept(new Set(config.networks.filter(isKernel).map((n) => n.name)));
      if (gone.length) log.info('removed kernel networks that are no longer configured', { networks: gone.join(' ') });
      for (const cfg of config.networks) {
        if (HostdevNetworks.isHostdev(cfg)) await d.hostdev.start(cfg);
        else await d.startNetwork(cfg);
      }
    } catch (e) {
      await d.stop({ keepKernel: false });
      throw e;
    }
    // VMs that still run: join them again (QEMU is the stream server; a kernel VM keeps its tap).
    for (const vm of [...d.store.state.vms]) {
      if (pidAlive(vm.pid) && d.hostdev.has(vm.network)) continue; // it keeps its VF
      const r = d.running.get(vm.network);
      if (pidAlive(vm.pid) && r) { if (vm.sock && r.net && !isKernel(r.cfg)) r.net.connectVm(vm.name, { kind: 'unix', path: vm.sock }); }
      else d.store.state.vms = d.store.state.vms.filter((v) => v !== vm);
    }
    d.store.changed();
    return d;
  }

  /** Static hosts named by VM get that VM's MAC (assigned now if it has none yet). */
  private resolveHosts(cfg: NetworkConfig): NetworkConfig {
    if (!cfg.hosts.some((h) => h.vm)) return cfg;
    const st = this.store.net(cfg.name);
    const hosts = cfg.hosts.map((h) => {
      if (!h.vm) return h;
      let mac = st.macs[h.vm];
      if (!mac) {
        mac = deriveMac(cfg.name, h.vm, new Set([...Object.values(st.macs), ...cfg.hosts.map((x) => x.mac).filter(Boolean)]));
        st.macs[h.vm] = mac;
        this.store.changed();
      }
      return { ...h, mac };
    });
    return { ...cfg, hosts };
  }

  private async startNetwork(cfgIn: NetworkConfig): Promise<void> {
    const cfg = this.resolveHosts(cfgIn);
    const st = this.store.net(cfg.name);
    const kernel = isKernel(cfg);
    let net: Network | null = null;
    const r: Running = { cfg: cfgIn, key: JSON.stringify({ ...cfgIn, where: undefined }), net: null };
    try {
      const bridgeMac = kernel ? await this.kernel.start(cfg, null) : null;
      if (cfg.mode !== 'bridge') {
        const opts = networkOptions(cfg);
        opts.fdBudget = this.fdBudget;
        if (kernel) opts.bridge = { name: cfg.bridge!, mac: bridgeMac! };
        opts.onLease = () => {
          st.leases = r.net!.dhcp.exportLeases() as typeof st.leases;
          this.store.changed();
          if (kernel) void this.kernel.refresh(cfg, r.net);
        };
        opts.onLease6 = () => { st.leases6 = r.net!.dhcp6?.exportLeases() ?? []; this.store.changed(); };
        net = await Network.start(opts);
      }
    } catch (e) {
      if (kernel) await this.kernel.stop(cfg, true).catch(() => {});
      const msg = (e as Error).message;
      const where = /cannot listen|in use|cannot bind|not a socket/.test(msg) && !kernel ? ` (${cfg.where.attach})` : '';
      throw new Error(`network '${cfg.name}'${where}: ${msg.replace(new RegExp(`^network '${cfg.name}': `), '')}`);
    }
    r.net = net;
    this.running.set(cfg.name, r);
    if (net) {
      net.dhcp.importLeases(st.leases);
      if (st.leases6) net.dhcp6?.importLeases(st.leases6);
      for (const [vm, mac] of Object.entries(st.macs)) net.vmMacs.set(vm.toLowerCase(), mac);
      if (!kernel) {
        for (const f of st.forwards) {
          try { await net.hostfwd.add(f); } catch (e) { log.warn('runtime forward not restored', { network: cfg.name, error: (e as Error).message }); }
        }
      }
    }
    if (kernel) await this.kernel.refresh(cfg, net); // forwards whose VM has a lease now
    log.info('network up', { network: cfg.name, mode: cfg.mode, subnet: cfg.mode === 'bridge' ? undefined : cidr(cfg), bridge: cfg.bridge, attach: cfg.attach.map((a) => a.text).join(' ') || undefined });
  }

  /** Stop a network; a kernel network with VM ports is kept for them when keepKernel is set. */
  private async stopNetwork(name: string, keepKernel: boolean): Promise<void> {
    const r = this.running.get(name);
    if (!r) return;
    this.running.delete(name);
    try {
      if (r.net) {
        this.store.net(name).leases = r.net.dhcp.exportLeases() as ReturnType<StateStore['net']>['leases'];
        if (r.net.dhcp6) this.store.net(name).leases6 = r.net.dhcp6.exportLeases();
      }
    } finally {
      r.net?.close(); // whatever happened to the state, the network's listeners and sockets go
    }
    if (isKernel(r.cfg)) await this.kernel.stop(r.cfg, keepKernel);
    log.info('network down', { network: name });
  }

  /** Apply a new config: restart changed networks, start new ones, stop removed ones. */
  async reload(next: Config): Promise<{ restarted: string[]; started: string[]; stopped: string[]; unchanged: string[] }> {
    const out = { restarted: [] as string[], started: [] as string[], stopped: [] as string[], unchanged: [] as string[] };
    const nextNames = new Set(next.networks.map((n) => n.name));
    for (const name of [...this.running.keys()]) if (!nextNames.has(name)) { await this.stopNetwork(name, false); out.stopped.push(name); }
    for (const name of this.hostdev.names()) if (!nextNames.has(name)) { this.hostdev.stop(name); out.stopped.push(name); }
    for (const cfg of next.networks) {
      const isPool = HostdevNetworks.isHostdev(cfg);
      if (isPool || this.hostdev.has(cfg.name)) { // to, from or between VF pools
        if (isPool && !this.hostdev.changed(cfg)) { out.unchanged.push(cfg.name); continue; }
        const was = this.hostdev.has(cfg.name) || this.running.has(cfg.name);
        await this.stopNetwork(cfg.name, false);
        this.hostdev.stop(cfg.name);
        if (isPool) await this.hostdev.start(cfg);
        else await this.startNetwork(cfg);
        (was ? out.restarted : out.started).push(cfg.name);
        continue;
      }
      const cur = this.running.get(cfg.name);
      const key = JSON.stringify({ ...cfg, where: undefined });
      if (cur && cur.key === key) { out.unchanged.push(cfg.name); continue; }
      // a kernel network on the same bridge and mode is re-applied in place (its VMs keep their link)
      const inPlace = cur !== undefined && isKernel(cur.cfg) && isKernel(cfg) && cur.cfg.bridge === cfg.bridge && cur.cfg.mode === cfg.mode && cur.cfg.uplink === cfg.uplink;
      if (cur) await this.stopNetwork(cfg.name, inPlace);
      await this.startNetwork(cfg);
      (cur ? out.restarted : out.started).push(cfg.name);
      const net = this.running.get(cfg.name)!.net;
      for (const vm of this.store.state.vms) if (vm.network === cfg.name && vm.sock && net && !isKernel(cfg)) net.connectVm(vm.name, { kind: 'unix', path: vm.sock });
    }
    this.config = { ...next };
    this.store.changed();
    log.info('config reloaded', out);
    return out;
  }

  /**
   * Stop every network, each even if another one's stop fails. Kernel networks whose bridges
   * still carry VMs stay up for them unless keepKernel is false (the next start adopts them).
   */
  async stop(opts: { keepKernel?: boolean } = {}): Promise<void> {
    const errors: string[] = [];
    for (const c of [...this.captures]) { try { c.stop(); } catch (e) { errors.push((e as Error).message); } }
    const names = [...this.running.keys()];
    const failed = (name: string) => (e: unknown): void => { errors.push(`network ${name}: ${(e as Error).message}`); };
    // userspace networks first, synchronously (their sockets close at once)
    const userspace = names.filter((name) => !isKernel(this.running.get(name)!.cfg)).map((name) => this.stopNetwork(name, false).catch(failed(name)));
    // written before anything is awaited: a caller that does not wait finds its state saved
    // (as when stop() was synchronous)
    this.store.save();
    for (const name of names) {
      if (this.running.has(name)) await this.stopNetwork(name, opts.keepKernel ?? true).catch(failed(name));
    }
    await Promise.all(userspace);
    try { this.hostdev.stopAll(); } catch (e) { errors.push(`VF pools: ${(e as Error).message}`); } // VFs stay with their running VMs
    this.store.save();
    if (errors.length) log.error('errors while stopping (everything was closed anyway)', { errors: errors.join('; ') });
  }

  /** The running network itself (for in-process users such as `qnet user`). */
  net(name: string): Network {
    const n = this.get(name).net;
    if (!n) throw new BadRequestError(`network '${name}' is a bridge to the LAN: qnet serves nothing on it`);
    return n;
  }

  // ---- DaemonControl ----

  private get(name: string): Running {
    if (this.hostdev.has(name)) throw new BadRequestError(`network '${name}' is a VF pool (mode hostdev): qnet is not on its data path, so it has no ports, forwards or captures`);
    const r = this.running.get(name);
    if (!r) throw new NotFoundError(`no network '${name}' (networks: ${[...this.running.keys(), ...this.hostdev.names()].join(', ') || 'none'})`);
    return r;
  }

  async status(): Promise<StatusInfo> {
    const kernelPorts = new Map<string, number>();
    for (const r of this.running.values()) if (isKernel(r.cfg)) kernelPorts.set(r.cfg.name, (await this.kernel.host.vmPorts(r.cfg.name).catch(() => [])).length);
    return {
      version: VERSION,
      pid: process.pid,
      uptimeSec: Math.round((Date.now() - this.started) / 1000),
      configPath: this.config.path,
      stateDir: this.config.stateDir,
      runtimeDir: this.config.runtimeDir,
      apiSocket: this.apiSocket,
      networks: [...this.running.values()].map((r): StatusInfo['networks'][number] => ({
        name: r.cfg.name, mode: r.cfg.mode, subnet: subnetText(r.cfg), ports: kernelPorts.get(r.cfg.name) ?? (r.net ? r.net.sw.ports.size - 1 : 0),
        leases: r.net?.dhcp.leases().length ?? 0, duplicateMacs: isKernel(r.cfg) ? [] : r.net?.duplicates() ?? [], bridge: r.cfg.bridge,
      })).concat(this.hostdev.names().map((n) => this.hostdev.summary(n))),
      warnings: [...this.config.warnings, ...this.store.problems, ...[...this.running.values()].flatMap((r) => (isKernel(r.cfg) ? [] : r.net?.duplicates() ?? []).map((m) => `network ${r.cfg.name}: MAC ${m} is used by two ports`))],
    };
  }

  async networks(): Promise<NetworkInfo[]> {
    const out: NetworkInfo[] = [];
    for (const n of [...this.running.keys(), ...this.hostdev.names()]) out.push(await this.network(n));
    return out;
  }

  /** Throws NotFoundError at once for an unknown network; the details come asynchronously. */
  network(name: string): Promise<NetworkInfo> {
    if (this.hostdev.has(name)) return Promise.resolve(this.hostdev.info(name));
    return this.networkInfo(this.get(name));
  }

  private async networkInfo(r: Running): Promise<NetworkInfo> {
    const name = r.cfg.name;
    const kernel = isKernel(r.cfg);
    return {
      name, mode: r.cfg.mode, subnet: subnetText(r.cfg), gateway: r.cfg.mode === 'bridge' ? '' : ip4ToString(r.cfg.gateway), domain: r.cfg.domain, mtu: r.cfg.mtu,
      ...(r.net?.prefix6 ? { subnet6: `${ip6ToString(r.net.prefix6.prefix, 0)}/${r.net.prefix6.len}`, gateway6: addrToString(r.net.prefix6.router) } : {}),
      attach: r.cfg.attach.map((a) => a.text),
      ports: kernel ? await this.kernel.ports(r.cfg, r.net) : this.ports(r),
      leases: this.leaseInfo(r),
      forwards: this.forwardInfo(r),
      duplicateMacs: kernel ? [] : r.net?.duplicates() ?? [],
      counters: r.net?.stats() ?? {},
      ...(kernel ? { kernel: await this.kernel.info(r.cfg) } : {}),
    };
  }

  private leaseInfo(r: Running): LeaseInfo[] {
    if (!r.net) return [];
    const statics = new Set(this.resolveHosts(r.cfg).hosts.map((h) => h.mac));
    const v4 = r.net.dhcp.leases().map((l) => ({ mac: l.mac, ip: ip4ToString(l.ip), hostname: l.hostname, expiresAt: l.expiresAt, static: statics.has(l.mac) }));
    const statics6 = new Set(r.cfg.hosts.filter((h) => h.ip6).map((h) => h.mac));
    const v6 = (r.net.dhcp6?.leases() ?? []).map((l) => ({ mac: l.mac, ip: l.ip, hostname: l.hostname, expiresAt: l.expiresAt, static: statics6.has(l.mac) }));
    return [...v4, ...v6];
  }

  private ports(r: Running): PortInfo[] {
    if (!r.net) return [];
    const leases = r.net.dhcp.leases();
    const vmByMac = new Map(Object.entries(this.store.net(r.cfg.name).macs).map(([vm, mac]) => [mac, vm]));
    const out: PortInfo[] = [];
    for (const sp of r.net.sw.ports.values()) {
      if (sp.port === r.net.gw) continue;
      const macs = r.net.sw.macsOn(sp.port);
      const addrs = new Set<string>();
      const names = new Set<string>();
      for (const m of macs) {
        for (const l of leases) if (l.mac === m) { addrs.add(ip4ToString(l.ip)); if (l.hostname) names.add(l.hostname); }
        const mac = Buffer.from(m.split(':').map((x) => parseInt(x, 16)));
        for (const [ip, n] of r.net!.gw.neighbours) if (n.mac.equals(mac)) addrs.add(ip4ToString(ip));
        // IPv6: what the guest formed or was given on the prefix (link-local ones are not listed)
        const p6 = r.net!.prefix6;
        if (p6) for (const [a, n] of r.net!.gw.neighbours6) if (n.mac.equals(mac) && inPrefix6(a, p6.prefix, p6.len)) addrs.add(addrToString(a));
      }
      // what the source guard lets it send from (link-local ones included)
      for (const a of r.net!.addressesOf(sp.port)) addrs.add(a);
      const vm = r.net!.portOwners.get(sp.port) ?? macs.map((m) => vmByMac.get(m)).find(Boolean);
      out.push({ id: sp.port.id, name: sp.port.name, kind: sp.port.kind, peer: sp.port.peer, macs, addresses: [...addrs], hostnames: [...names], vm, ...sp.port.counters, drops: r.net!.portDrops(sp) });
    }
    return out;
  }

  private forwardInfo(r: Running): ForwardInfo[] {
    if (isKernel(r.cfg)) return this.kernelForwardInfo(r);
    if (!r.net) return [];
    const runtime = new Set(this.store.net(r.cfg.name).forwards.map((f) => forwardId(f.proto, f.hostAddr ?? '127.0.0.1', f.hostPort)));
    return r.net.forwards().map((f) => {
      const id = forwardId(f.proto, f.hostAddr, f.boundPort);
      return {
        id, proto: f.proto, hostAddr: f.hostAddr || '0.0.0.0', hostPort: f.boundPort, guest: f.guest || addrToString(f.guestIp), guestPort: f.guestPort,
        connections: f.connections, source: runtime.has(id) || runtime.has(forwardId(f.proto, f.hostAddr, f.hostPort)) ? 'runtime' : 'config',
      };
    });
  }

  /** A kernel network's forwards: its DNAT rules (the guest column says where it points now). */
  private kernelForwardInfo(r: Running): ForwardInfo[] {
    const row = (f: ForwardRule, source: 'config' | 'runtime'): ForwardInfo => {
      const ip = parseIp4(f.guest) ?? r.net?.addressOf(f.guest) ?? null;
      return {
        id: forwardId(f.proto, f.hostAddr || '0.0.0.0', f.hostPort), proto: f.proto, hostAddr: f.hostAddr || '0.0.0.0', hostPort: f.hostPort,
        guest: ip === null ? `${f.guest} (no address yet)` : f.guest === ip4ToString(ip) ? f.guest : `${f.guest} (${ip4ToString(ip)})`,
        guestPort: f.guestPort, connections: 0, source,
      };
    };
    return [...r.cfg.forwards.map((f) => row(f, 'config')), ...this.store.net(r.cfg.name).forwards.map((f) => row(f, 'runtime'))];
  }

  leases(network?: string): (LeaseInfo & { network: string })[] {
    if (network && this.hostdev.has(network)) return []; // the VMs' DHCP is the physical network's
    const nets = network ? [this.get(network)] : [...this.running.values()];
    return nets.flatMap((r) => this.leaseInfo(r).map((l) => ({ ...l, network: r.cfg.name })));
  }

  forwards(network?: string): (ForwardInfo & { network: string })[] {
    if (network && this.hostdev.has(network)) return [];
    const nets = network ? [this.get(network)] : [...this.running.values()];
    return nets.flatMap((r) => this.forwardInfo(r).map((f) => ({ ...f, network: r.cfg.name })));
  }

  async addForward(network: string, spec: ForwardRequest): Promise<ForwardInfo> {
    const r = this.get(network);
    if (isKernel(r.cfg)) return this.addKernelForward(r, spec);
    if (!r.net) throw new BadRequestError(`network '${network}' has no forwards`);
    if (spec.proto !== 'tcp' && spec.proto !== 'udp') throw new BadRequestError(`proto '${spec.proto}' is not tcp or udp`);
    if (!Number.isInteger(spec.hostPort) || spec.hostPort < 0 || spec.hostPort > 65535) throw new BadRequestError(`hostPort ${spec.hostPort} is out of range 0-65535`);
    if (!Number.isInteger(spec.guestPort) || spec.guestPort < 1 || spec.guestPort > 65535) throw new BadRequestError(`guestPort ${spec.guestPort} is out of range 1-65535`);
    if (typeof spec.guest !== 'string' || !spec.guest) throw new BadRequestError('guest (a VM name or IPv4 address) is required');
    const hostAddr = spec.hostAddr ?? '127.0.0.1';
    if (net.isIP(hostAddr) === 0) throw new BadRequestError(`hostAddr '${hostAddr}' is not an IP address`);
    let active;
    try {
      active = await r.net.hostfwd.add({ ...spec, hostAddr });
    } catch (e) {
      throw new BadRequestError((e as Error).message, /already/.test((e as Error).message) ? 409 : 400);
    }
    const saved: ForwardRule = { proto: spec.proto, hostAddr, hostPort: active.boundPort, guest: spec.guest, guestPort: spec.guestPort };
    this.store.net(network).forwards.push(saved);
    this.store.changed();
    return this.forwardInfo(r).find((f) => f.id === forwardId(spec.proto, hostAddr, active.boundPort))!;
  }

  private async addKernelForward(r: Running, spec: ForwardRequest): Promise<ForwardInfo> {
    if (r.cfg.mode !== 'nat') throw new BadRequestError(`network '${r.cfg.name}' is ${r.cfg.mode}: forwards (DNAT) are for nat networks`);
    if (!Number.isInteger(spec.hostPort) || spec.hostPort < 1 || spec.hostPort > 65535) throw new BadRequestError(`hostPort ${spec.hostPort} must be 1-65535 on a kernel network (DNAT has no port to pick)`);
    if (!Number.isInteger(spec.guestPort) || spec.guestPort < 1 || spec.guestPort > 65535) throw new BadRequestError(`guestPort ${spec.guestPort} is out of range 1-65535`);
    if (spec.proto !== 'tcp' && spec.proto !== 'udp') throw new BadRequestError(`proto '${spec.proto}' is not tcp or udp`);
    const hostAddr = spec.hostAddr === undefined || spec.hostAddr === '0.0.0.0' ? '' : spec.hostAddr;
    if (hostAddr && parseIp4(hostAddr) === null) throw new BadRequestError(`hostAddr '${hostAddr}' is not an IPv4 address`);
    if (hostAddr.startsWith('127.')) throw new BadRequestError('a kernel network forwards with DNAT on the host\'s addresses; loopback cannot be routed to a bridge: leave hostAddr out (every address) or give one of the host\'s');
    const id = forwardId(spec.proto, hostAddr || '0.0.0.0', spec.hostPort);
    if (this.kernelForwardInfo(r).some((f) => f.id === id)) throw new BadRequestError(`forward ${id} already exists on network '${r.cfg.name}'`, 409);
    const saved: ForwardRule = { proto: spec.proto, hostAddr, hostPort: spec.hostPort, guest: spec.guest, guestPort: spec.guestPort };
    this.store.net(r.cfg.name).forwards.push(saved);
    this.store.changed();
    await this.kernel.refresh(r.cfg, r.net);
    return this.kernelForwardInfo(r).find((f) => f.id === id)!;
  }

  removeForward(network: string, id: string): ForwardInfo[] {
    const r = this.get(network);
    const before = this.forwardInfo(r);
    const m = /^(tcp|udp):(?:(.*):)?(\d+)$/.exec(id);
    if (!m) throw new BadRequestError(`'${id}' is not a forward id (PROTO:[HOSTADDR:]HOSTPORT, e.g. tcp:127.0.0.1:8080 or tcp:[::1]:8080)`);
    const proto = m[1] as 'tcp' | 'udp';
    const port = Number(m[3]);
    const given = m[2]?.replace(/^\[(.*)\]$/, '$1');
    const addr = given === undefined ? undefined : given === '0.0.0.0' ? '' : given;
    if (isKernel(r.cfg)) {
      const st = this.store.net(network);
      const match = (f: ForwardRule) => f.proto === proto && f.hostPort === port && (addr === undefined || (f.hostAddr || '') === addr);
      const gone = st.forwards.filter(match);
      if (gone.length === 0) {
        const inConfig = r.cfg.forwards.some(match);
        throw inConfig ? new BadRequestError(`forward ${id} comes from the config file; edit it there and reload`) : new NotFoundError(`no runtime forward ${id} on network '${network}'`);
      }
      const ids = new Set(gone.map((f) => forwardId(f.proto, f.hostAddr || '0.0.0.0', f.hostPort)));
      st.forwards = st.forwards.filter((f) => !match(f));
      this.store.changed();
      void this.kernel.refresh(r.cfg, r.net);
      return before.filter((f) => ids.has(f.id));
    }
    if (!r.net) throw new NotFoundError(`network '${network}' has no forwards`);
    const gone = r.net.hostfwd.remove(proto, port, addr);
    if (gone.length === 0) throw new NotFoundError(`no forward ${id} on network '${network}' (forwards: ${before.map((f) => f.id).join(', ') || 'none'})`);
    const st = this.store.net(network);
    st.forwards = st.forwards.filter((f) => !(f.proto === proto && f.hostPort === port && (addr === undefined || (f.hostAddr ?? '127.0.0.1') === (addr || '0.0.0.0'))));
    this.store.changed();
    const ids = new Set(gone.map((g) => forwardId(g.proto, g.hostAddr, g.boundPort)));
    return before.filter((f) => ids.has(f.id));
  }

  private findPort(r: Running, key: string): Port {
    const net = r.net!;
    for (const sp of net.sw.ports.values()) {
      const p = sp.port;
      if (String(p.id) === key || net.portOwners.get(p) === key || net.sw.macsOn(p).includes(key.toLowerCase())) return p;
    }
    const vmMac = this.store.net(r.cfg.name).macs[key];
    if (vmMac) for (const sp of net.sw.ports.values()) if (net.sw.macsOn(sp.port).includes(vmMac)) return sp.port;
    throw new NotFoundError(`no port '${key}' on network '${r.cfg.name}' (give a port id, a VM name or a MAC)`);
  }

  startCapture(network: string, out: PcapWriter, port?: string): { stop(): void } {
    const r = this.get(network);
    if (isKernel(r.cfg) || !r.net) badKernelOp('capture', r.cfg);
    const net = r.net;
    const p = port ? this.findPort(r, port) : undefined;
    const w = net.sw.startCapture(out, p);
    const handle = {
      stop: () => {
        this.captures.delete(handle);
        if (!w.closed) { if (p) net.sw.stopCapture(p); else net.sw.stopCapture(); }
      },
    };
    this.captures.add(handle);
    w.onClose(() => this.captures.delete(handle));
    return handle;
  }

  metrics(): string {
    const nets = [...this.running.values()].filter((r): r is Running & { net: Network } => r.net !== null);
    return renderMetrics({
      networks: nets.map((r) => ({ name: r.cfg.name, net: r.net, ports: isKernel(r.cfg) ? [] : this.ports(r) })),
      limits: this.limits,
      fdBudget: this.fdBudget,
    });
  }

  /**
   * The VM's MAC on a network: the one asked for (`--mac`), else the one recorded for its name,
   * else derived from the names (stable), re-derived on collision (unique). `r` is the running
   * network, whose static hosts, ports and leases count as taken; none for a VF pool.
   */
  private vmMac(network: string, name: string, want: string | undefined, r: Running | null): string {
    const st = this.store.net(network);
    const net = r?.net ?? null;
    const inUse = (mac: string): string | undefined =>
      Object.entries(st.macs).find(([vm, m]) => m === mac && vm !== name)?.[0] ?? (r ? this.resolveHosts(r.cfg).hosts.find((h) => h.mac === mac && h.vm !== name && h.vm !== undefined)?.vm : undefined);
    let mac = st.macs[name];
    if (want !== undefined) {
      if (parseInt(want.slice(0, 2), 16) & 1) throw new BadRequestError(`${want} is a multicast MAC; a NIC needs a unicast one`);
      const other = inUse(want);
      if (other) throw new BadRequestError(`MAC ${want} is already VM '${other}'s on network '${network}'`, 409);
      const host = r?.cfg.hosts.find((h) => h.vm === name);
      if (host) throw new BadRequestError(`VM '${name}' is a static host of network '${network}' (hosts: vm: ${name}); its MAC is ${mac ?? 'assigned by qnet'}, not ${want}`, 409);
      if (mac !== want) { mac = want; st.macs[name] = mac; this.store.changed(); }
    }
    if (!mac) {
      const taken = new Set<string>([
        ...Object.values(st.macs),
        ...(r ? r.cfg.hosts.map((h) => h.mac).filter(Boolean) : []),
        ...(net && r && !isKernel(r.cfg) ? [...net.sw.ports.values()].flatMap((sp) => net.sw.macsOn(sp.port)) : []),
        ...(net ? net.dhcp.leases().map((l) => l.mac) : []),
      ]);
      mac = deriveMac(network, name, taken);
      st.macs[name] = mac;
      this.store.changed();
    }
    return mac;
  }

  /**
   * On a hostdev network (else undefined): the VM's MAC (vmMac) and a VF with it, held by `pid`
   * (qnet run) until the VM registers. VF pools are root's (vfio devices, sysfs writes): only
   * root and the daemon's own user may take a VF.
   */
  attachHostdev(network: string, name: string, pid?: number, opts: { mac?: string; who?: PeerCred | null } = {}): Promise<AttachResult> | undefined {
    if (!this.hostdev.has(network)) return undefined;
    const who = opts.who ?? null;
    if (who && !this.isOwner(who)) throw new ForbiddenError(`${describeUid(who.uid)} may not take VFs of network '${network}': a VF pool (mode hostdev) is for root and the daemon's own user`);
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) throw new BadRequestError(`'${name}' is not a valid VM name (letters, digits, _ . -)`);
    return this.hostdev.attach(network, name, this.vmMac(network, name, opts.mac, null), pid);
  }

  /**
   * A MAC for a VM name (vmMac) and the QEMU arguments for a NIC with it. On a kernel network
   * the arguments use qnet's bridge helper.
   */
  attach(network: string, name: string, model = DEFAULT_MODEL, want?: string, who: PeerCred | null = null): AttachResult {
    if (this.hostdev.has(network)) throw new BadRequestError(`network '${network}' is a VF pool (mode hostdev): its VFs go to qnet run only (qnet run ${network} --name ${name} -- qemu-system-x86_64 ...)`);
    const r = this.get(network);
    if (isKernel(r.cfg)) KernelNetworks.mayAttach(r.cfg, who);
    else if (who && !this.isOwner(who)) throw new ForbiddenError(`${describeUid(who.uid)} may not attach VMs to network '${network}': it is a userspace network (its attach socket's permissions decide)`);
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) throw new BadRequestError(`'${name}' is not a valid VM name (letters, digits, _ . -)`);
    const mac = this.vmMac(network, name, want, r);
    r.net?.vmMacs.set(name.toLowerCase(), mac);
    if (isKernel(r.cfg)) {
      const args = ['-netdev', `bridge,id=qnet0,br=${r.cfg.bridge},helper=${BRIDGE_HELPER}`, '-device', `${model},netdev=qnet0,mac=${mac}`];
      return { network, name, mac, model, args, kind: 'kernel', bridge: r.cfg.bridge };
    }
    const att = r.cfg.attach[0];
    const args = ['-netdev', qemuNetdevFor(att.endpoint, 'qnet0'), '-device', `${model},netdev=qnet0,mac=${mac}`];
    return { network, name, mac, model, args, kind: 'stream' };
  }

  connectVm(vm: VmRecord, who: PeerCred | null = null): void {
    if (this.hostdev.has(vm.network)) {
      if (who && !this.isOwner(who)) throw new ForbiddenError(`${describeUid(who.uid)} may not register VMs on VF pool '${vm.network}' (mode hostdev is for root and the daemon's own user)`);
      if (!vm.name || !Number.isInteger(vm.pid)) throw new BadRequestError('a VM needs name and pid');
      this.hostdev.connect({ ...vm, ...(who ? { uid: who.uid } : {}) });
      return;
    }
    const r = this.get(vm.network);
    if (!vm.name || !Number.isInteger(vm.pid)) throw new BadRequestError('a VM needs name and pid');
    const prev = this.store.state.vms.find((v) => v.name === vm.name);
    if (prev && who && !this.isOwner(who) && prev.uid !== who.uid && pidAlive(prev.pid)) throw new ForbiddenError(`VM '${vm.name}' belongs to ${describeUid(prev.uid ?? 0)}`);
    if (isKernel(r.cfg)) {
      KernelNetworks.mayAttach(r.cfg, who);
      if (!vm.tap) throw new BadRequestError(`VM ${vm.name}: network '${vm.network}' is a kernel network; register the VM with its tap`);
    } else {
      if (!vm.sock) throw new BadRequestError('a VM on a userspace network needs sock (its QEMU stream socket)');
      if (who && !this.isOwner(who)) throw new ForbiddenError(`${describeUid(who.uid)} may not register VMs on userspace network '${vm.network}'`);
      if (!fs.existsSync(vm.sock)) throw new BadRequestError(`VM ${vm.name}: no QEMU stream socket at ${vm.sock}`);
    }
    const rec: VmRecord = { ...vm, ...(who ? { uid: who.uid } : {}) };
    this.store.state.vms = this.store.state.vms.filter((v) => v.name !== vm.name);
    this.store.state.vms.push(rec);
    if (!isKernel(r.cfg) && r.net && vm.sock) r.net.connectVm(vm.name, { kind: 'unix', path: vm.sock });
    this.store.changed();
    log.info('vm joined', { vm: vm.name, network: vm.network, mac: vm.mac, tap: vm.tap });
  }

  async disconnectVm(name: string, who: PeerCred | null = null): Promise<void> {
    const vm = this.store.state.vms.find((v) => v.name === name);
    // on a hostdev network the VF goes back even when QEMU never registered (it failed to start)
    const hadVf = this.hostdev.ownerOf(name) !== undefined;
    if (hadVf) {
      if (who && !this.isOwner(who)) throw new ForbiddenError(`VM '${name}' has a VF of a pool (mode hostdev); only root and the daemon's user may give it back`);
      this.store.state.vms = this.store.state.vms.filter((v) => v.name !== name);
      this.store.changed();
      await this.hostdev.release(name);
      return;
    }
    if (!vm) throw new NotFoundError(`no VM '${name}'`);
    if (who && !this.isOwner(who) && vm.uid !== who.uid) throw new ForbiddenError(`VM '${name}' belongs to ${describeUid(vm.uid ?? 0)}; only they, root and the daemon's user may unregister it`);
    this.running.get(vm.network)?.net?.disconnectVm(name);
    this.store.state.vms = this.store.state.vms.filter((v) => v !== vm);
    this.store.changed();
    log.info('vm left', { vm: name, network: vm.network });
  }

  vms(who: PeerCred | null = null): VmRecord[] {
    // forget VMs whose QEMU is gone
    const alive = this.store.state.vms.filter((v) => pidAlive(v.pid));
    if (alive.length !== this.store.state.vms.length) {
      for (const v of this.store.state.vms) if (!alive.includes(v)) this.running.get(v.network)?.net?.disconnectVm(v.name);
      this.store.state.vms = alive;
      this.store.changed();
      void this.hostdev.reap(); // their VFs go back
    }
    return who && !this.isOwner(who) ? alive.filter((v) => v.uid === who.uid) : alive;
  }

  // ---- kernel networks ----

  private isOwner(who: PeerCred): boolean { return who.uid === 0 || who.uid === process.getuid?.(); }

  authorize(who: PeerCred | null, route: { method: string; pattern: string; userRoute: boolean }): void {
    if (!who || this.isOwner(who) || route.userRoute) return;
    throw new ForbiddenError(`${describeUid(who.uid)} may not use ${route.method} ${route.pattern}: only root and the daemon's own user may; other users may attach VMs to kernel networks that allow them`);
  }

  /** The kernel network a request names (by network or by bridge), checked. */
  private kernelNet(name: string | undefined, bridge?: string): Running {
    if (name && this.hostdev.has(name)) throw new BadRequestError(`network '${name}' is a VF pool (mode hostdev): its VMs get VFs through qnet run, not taps`);
    let r: Running | undefined;
    if (name) r = this.running.get(name) ?? [...this.running.values()].find((x) => x.cfg.bridge === name);
    else if (bridge) r = [...this.running.values()].find((x) => x.cfg.bridge === bridge) ?? this.running.get(bridge);
    else {
      const kernels = [...this.running.values()].filter((x) => isKernel(x.cfg));
      r = kernels.length === 1 ? kernels[0] : kernels.find((x) => x.cfg.name === 'default');
      if (!r) throw new BadRequestError(kernels.length ? `several kernel networks (${kernels.map((x) => x.cfg.name).join(', ')}): say which with --net` : 'this daemon runs no kernel network (a network with bridge:)');
    }
    const what = name ?? bridge;
    if (!r) throw new NotFoundError(`no network or bridge '${what}' (kernel networks: ${[...this.running.values()].filter((x) => isKernel(x.cfg)).map((x) => `${x.cfg.name} on ${x.cfg.bridge}`).join(', ') || 'none'})`);
    if (!isKernel(r.cfg)) throw new BadRequestError(`network '${r.cfg.name}' is a userspace network (no bridge:); attach QEMU to it with qnet attach or qnet run`);
    return r;
  }

  async createTap(req: TapRequest, who: PeerCred | null): Promise<{ info: TapResult; fds: number[] }> {
    const r = this.kernelNet(req.network, req.bridge);
    KernelNetworks.mayAttach(r.cfg, who);
    const st = this.store.net(r.cfg.name);
    // A VM attached by `qnet run` has its MAC already (qnet put it on QEMU's command line). For
    // QEMU's own bridge helper qnet cannot know the NIC's MAC, so the VM is not registered under
    // one: that would give its name to a MAC the VM may not have (Network.nameOwner); the MAC
    // reported is only the one qnet would have chosen.
    const mac = st.macs[req.vm] ?? deriveMac(r.cfg.name, req.vm, new Set([...Object.values(st.macs), ...r.cfg.hosts.map((h) => h.mac).filter(Boolean)]));
    const tap = await this.kernel.host.createTap(r.cfg.name, req.vm, { uid: who?.uid, gid: who?.gid, mtu: r.cfg.mtu, vnetHdr: req.vnetHdr });
    const fds = [tap.fd];
    let vhost = false;
    if (req.vhost) {
      const v = KernelNetworks.vhostFd();
      if (v !== null) { fds.push(v); vhost = true; }
    }
    log.info('tap handed over', { network: r.cfg.name, vm: req.vm, tap: tap.name, to: who ? describeUid(who.uid) : 'owner', pid: who?.pid });
    return { info: { network: r.cfg.name, vm: req.vm, tap: tap.name, bridge: r.cfg.bridge!, mac, mtu: r.cfg.mtu || 1500, vnetHdr: tap.vnetHdr, vhost }, fds };
  }

  async addPort(ifname: string, network: string | undefined, vm: string | undefined, who: PeerCred | null): Promise<{ network: string; ifname: string; bridge: string }> {
    const r = this.kernelNet(network);
    await this.kernel.host.addPort(r.cfg.name, ifname, { vm, uid: who?.uid, mtu: r.cfg.mtu });
    log.info('port added', { network: r.cfg.name, ifname, vm });
    return { network: r.cfg.name, ifname, bridge: r.cfg.bridge! };
  }

  async removePort(ifname: string, network: string | undefined, _who: PeerCred | null): Promise<{ network: string; ifname: string; removed: boolean }> {
    const r = network ? this.kernelNet(network) : [...this.running.values()].find((x) => isKernel(x.cfg) && this.kernel.host.get(x.cfg.name)?.ports.some((p) => p.ifname === ifname)) ?? this.kernelNet(undefined);
    const removed = await this.kernel.host.removePort(r.cfg.name, ifname);
    log.info('port removed', { network: r.cfg.name, ifname });
    return { network: r.cfg.name, ifname, removed };
  }

  /** How to attach QEMU to each network, for `qnet up`'s banner. */
  banner(): string {
    const out: string[] = [];
    for (const n of this.hostdev.names()) {
      const s = this.hostdev.summary(n);
      out.push(`network ${n} (hostdev) VFs of ${s.pool.pfs.join(', ')}: ${s.pool.free} free of ${s.pool.total}`);
      out.push(`  use:    qnet run ${n} --name VM -- qemu-system-x86_64 ...`);
    }
    for (const r of this.running.values()) {
      if (isKernel(r.cfg)) {
        out.push(`network ${r.cfg.name} (${r.cfg.mode}, kernel bridge ${r.cfg.bridge}${r.cfg.uplink ? ` with uplink ${r.cfg.uplink}` : ''})${r.cfg.mode === 'bridge' ? '' : ` ${cidr(r.cfg)} gateway ${ip4ToString(r.cfg.gateway)}`}`);
        out.push(`  attach: qnet run ${r.cfg.name} --name VM -- qemu-system-x86_64 ...`);
        out.push(`  or:     -netdev bridge,id=n0,br=${r.cfg.bridge},helper=${BRIDGE_HELPER} -device virtio-net-pci,netdev=n0`);
        out.push(`  or:     -netdev tap,id=n0,script=${BRIDGE_HELPER.replace(/bridge-helper$/, 'ifup')},downscript=${BRIDGE_HELPER.replace(/bridge-helper$/, 'ifdown')} (as root)`);
        continue;
      }
      out.push(`network ${r.cfg.name} (${r.cfg.mode}) ${cidr(r.cfg)} gateway ${ip4ToString(r.cfg.gateway)}`);
      r.cfg.attach.forEach((a) => out.push(`  attach: -netdev ${qemuNetdevFor(a.endpoint, 'n0')} -device virtio-net-pci,netdev=n0,mac=52:54:00:XX:XX:XX`));
      out.push(`  or:     qnet run ${r.cfg.name} --name VM -- qemu-system-x86_64 ...`);
    }
    return out.join('\n');
  }
}

function subnetText(cfg: NetworkConfig): string { return cfg.mode === 'bridge' ? `(the LAN of ${cfg.uplink ?? cfg.bridge})` : cidr(cfg); }
