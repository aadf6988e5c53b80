// The qnet daemon: runs every configured network, keeps their state across restarts, and
// answers the control API (DaemonControl). Reloading the config (SIGHUP) restarts only the
// networks whose configuration changed; the others keep their guests and flows.
import fs from 'node:fs';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import { Network, type NetworkOptions } from '../network/network.ts';
import { userNetworkOptions } from '../qemu/user-network.ts';
import { cidr, type Config, type NetworkConfig } from '../config/config.ts';
import { StateStore } from './state.ts';
import { ip4ToString, ip6ToString } from '../wire/addr.ts';
import { addrToString, inPrefix6, parseAddr } from '../stack/addr.ts';
import net from 'node:net';
import { qemuNetdevFor } from '../link/endpoint.ts';
import type { Port } from '../link/port.ts';
import { logger } from '../util/log.ts';
import {
  BadRequestError, NotFoundError,
  type AttachResult, type ForwardRequest, type DaemonControl, type ForwardInfo, type ForwardRule, type LeaseInfo, type NetworkInfo,
  type PortInfo, type StatusInfo, type VmRecord,
} from './types.ts';

const log = logger('daemon');
const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
export const DEFAULT_MODEL = 'virtio-net-pci';

interface Running {
  cfg: NetworkConfig;
  /** the config as JSON: what reload compares */
  key: string;
  net: Network;
}

/** `proto:hostAddr:hostPort`, an IPv6 host address in brackets (tcp:[::1]:8022). */
function forwardId(proto: string, hostAddr: string, hostPort: number): string {
  const a = hostAddr || '0.0.0.0';
  return `${proto}:${a.includes(':') ? `[${a}]` : a}:${hostPort}`;
}

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

export function networkOptions(cfg: NetworkConfig): NetworkOptions {
  if (cfg.mode === 'user') {
    return {
      ...userNetworkOptions({ config: cfg.user!.config, dnsUpstreams: cfg.upstreams, mtu: cfg.mtu, listen: cfg.attach, connect: cfg.connect, pcap: cfg.pcap, name: cfg.name }),
      forwards: [...cfg.user!.config.hostfwd, ...cfg.forwards],
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
    staticHosts: cfg.hosts.map((h) => ({ mac: h.mac, ip: h.ip, hostname: h.name })),
    domain: cfg.domain,
    dnsSearch: cfg.domain ? [cfg.domain] : undefined,
    records: cfg.records.map((rec) => ({ name: rec.name, ip: rec.ip ?? parseAddr(rec.ip6!)! })),
    upstreams: cfg.upstreams,
    mtu: cfg.mtu,
    forwards: cfg.forwards,
    listen: cfg.attach,
    ipv6: cfg.ipv6 ? {
      prefix: cfg.ipv6.prefix, prefixLen: cfg.ipv6.prefixLen, router: cfg.ipv6.gateway, dns: cfg.ipv6.gateway, dhcpRange: cfg.ipv6.dhcpRange,
      hosts: cfg.hosts.filter((h) => h.ip6).map((h) => ({ mac: h.mac, ip: h.ip6!, hostname: h.name })),
    } : undefined,
  };
}

export class Daemon implements DaemonControl {
  private readonly running = new Map<string, Running>();
  private readonly store: StateStore;
  private readonly started = Date.now();
  private readonly captures = new Set<{ stop(): { frames: number } }>();
  apiSocket = '';

  private constructor(public config: Config) {
    fs.mkdirSync(config.runtimeDir, { recursive: true, mode: 0o700 });
    this.store = new StateStore(config.stateDir);
    this.store.load();
  }

  static async start(config: Config): Promise<Daemon> {
    const d = new Daemon(config);
    try {
      for (const cfg of config.networks) await d.startNetwork(cfg);
    } catch (e) {
      d.stop();
      throw e;
    }
    // VMs that still run (QEMU is their stream server): join them again.
    for (const vm of [...d.store.state.vms]) {
      if (pidAlive(vm.pid) && d.running.has(vm.network)) d.running.get(vm.network)!.net.connectVm(vm.name, { kind: 'unix', path: vm.sock });
      else d.store.state.vms = d.store.state.vms.filter((v) => v !== vm);
    }
    d.store.changed();
    return d;
  }

  private async startNetwork(cfg: NetworkConfig): Promise<void> {
    const st = this.store.net(cfg.name);
    const opts = networkOptions(cfg);
    opts.onLease = () => { st.leases = r.net.dhcp.exportLeases() as typeof st.leases; this.store.changed(); };
    opts.onLease6 = () => { st.leases6 = r.net.dhcp6?.exportLeases() ?? []; this.store.changed(); };
    let net: Network;
    try {
      net = await Network.start(opts);
    } catch (e) {
      const msg = (e as Error).message;
      const where = /cannot listen|in use|cannot bind|not a socket/.test(msg) ? ` (${cfg.where.attach})` : '';
      throw new Error(`network '${cfg.name}'${where}: ${msg}`);
    }
    const r: Running = { cfg, key: JSON.stringify({ ...cfg, where: undefined }), net };
    this.running.set(cfg.name, r);
    net.dhcp.importLeases(st.leases);
    if (st.leases6) net.dhcp6?.importLeases(st.leases6);
    for (const [vm, mac] of Object.entries(st.macs)) net.vmMacs.set(vm.toLowerCase(), mac);
    for (const f of st.forwards) {
      try { await net.hostfwd.add(f); } catch (e) { log.warn('runtime forward not restored', { network: cfg.name, error: (e as Error).message }); }
    }
    log.info('network up', { network: cfg.name, mode: cfg.mode, subnet: cidr(cfg), attach: cfg.attach.map((a) => a.text).join(' ') });
  }

  private stopNetwork(name: string): void {
    const r = this.running.get(name);
    if (!r) return;
    this.store.net(name).leases = r.net.dhcp.exportLeases() as ReturnType<StateStore['net']>['leases'];
    if (r.net.dhcp6) this.store.net(name).leases6 = r.net.dhcp6.exportLeases();
    r.net.close();
    this.running.delete(name);
    log.info('network down', { network: name });
  }

  /** Apply a new config: restart changed networks, start new ones, stop removed ones. */
  async reload(next: Config): Promise<{ restarted: string[]; started: string[]; stopped: string[]; unchanged: string[] }> {
    const out = { restarted: [] as string[], started: [] as string[], stopped: [] as string[], unchanged: [] as string[] };
    const nextNames = new Set(next.networks.map((n) => n.name));
    for (const name of [...this.running.keys()]) if (!nextNames.has(name)) { this.stopNetwork(name); out.stopped.push(name); }
    for (const cfg of next.networks) {
      const cur = this.running.get(cfg.name);
      const key = JSON.stringify({ ...cfg, where: undefined });
      if (cur && cur.key === key) { out.unchanged.push(cfg.name); continue; }
      if (cur) this.stopNetwork(cfg.name);
      await this.startNetwork(cfg);
      (cur ? out.restarted : out.started).push(cfg.name);
      for (const vm of this.store.state.vms) if (vm.network === cfg.name) this.running.get(cfg.name)!.net.connectVm(vm.name, { kind: 'unix', path: vm.sock });
    }
    this.config = { ...next };
    this.store.changed();
    log.info('config reloaded', out);
    return out;
  }

  stop(): void {
    for (const c of this.captures) c.stop();
    for (const name of [...this.running.keys()]) this.stopNetwork(name);
    this.store.save();
  }

  /** The running network itself (for in-process users such as `qnet user`). */
  net(name: string): Network { return this.get(name).net; }

  // ---- DaemonControl ----

  private get(name: string): Running {
    const r = this.running.get(name);
    if (!r) throw new NotFoundError(`no network '${name}' (networks: ${[...this.running.keys()].join(', ') || 'none'})`);
    return r;
  }

  status(): StatusInfo {
    return {
      version: VERSION,
      pid: process.pid,
      uptimeSec: Math.round((Date.now() - this.started) / 1000),
      configPath: this.config.path,
      stateDir: this.config.stateDir,
      runtimeDir: this.config.runtimeDir,
      apiSocket: this.apiSocket,
      networks: [...this.running.values()].map((r) => ({
        name: r.cfg.name, mode: r.cfg.mode, subnet: cidr(r.cfg), ports: r.net.sw.ports.size - 1,
        leases: r.net.dhcp.leases().length, duplicateMacs: r.net.duplicates(),
      })),
      warnings: [...this.config.warnings, ...[...this.running.values()].flatMap((r) => r.net.duplicates().map((m) => `network ${r.cfg.name}: MAC ${m} is used by two ports`))],
    };
  }

  networks(): NetworkInfo[] { return [...this.running.keys()].map((n) => this.network(n)); }

  network(name: string): NetworkInfo {
    const r = this.get(name);
    return {
      name, mode: r.cfg.mode, subnet: cidr(r.cfg), gateway: ip4ToString(r.cfg.gateway), domain: r.cfg.domain, mtu: r.cfg.mtu,
      ...(r.net.prefix6 ? { subnet6: `${ip6ToString(r.net.prefix6.prefix, 0)}/${r.net.prefix6.len}`, gateway6: addrToString(r.net.prefix6.router) } : {}),
      attach: r.cfg.attach.map((a) => a.text),
      ports: this.ports(r),
      leases: this.leaseInfo(r),
      forwards: this.forwardInfo(r),
      duplicateMacs: r.net.duplicates(),
      counters: r.net.stats(),
    };
  }

  private leaseInfo(r: Running): LeaseInfo[] {
    const statics = new Set(r.cfg.hosts.map((h) => h.mac));
    const v4 = r.net.dhcp.leases().map((l) => ({ mac: l.mac, ip: ip4ToString(l.ip), hostname: l.hostname, expiresAt: l.expiresAt, static: statics.has(l.mac) }));
    const statics6 = new Set(r.cfg.hosts.filter((h) => h.ip6).map((h) => h.mac));
    const v6 = (r.net.dhcp6?.leases() ?? []).map((l) => ({ mac: l.mac, ip: l.ip, hostname: l.hostname, expiresAt: l.expiresAt, static: statics6.has(l.mac) }));
    return [...v4, ...v6];
  }

  private ports(r: Running): PortInfo[] {
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
        for (const [ip, n] of r.net.gw.neighbours) if (n.mac.equals(mac)) addrs.add(ip4ToString(ip));
        // IPv6: what the guest formed or was given on the prefix (link-local ones are not listed)
        const p6 = r.net.prefix6;
        if (p6) for (const [a, n] of r.net.gw.neighbours6) if (n.mac.equals(mac) && inPrefix6(a, p6.prefix, p6.len)) addrs.add(addrToString(a));
      }
      const vm = r.net.portOwners.get(sp.port) ?? macs.map((m) => vmByMac.get(m)).find(Boolean);
      out.push({ id: sp.port.id, name: sp.port.name, kind: sp.port.kind, peer: sp.port.peer, macs, addresses: [...addrs], hostnames: [...names], vm, ...sp.port.counters, drops: { ...sp.drops } });
    }
    return out;
  }

  private forwardInfo(r: Running): ForwardInfo[] {
    const runtime = new Set(this.store.net(r.cfg.name).forwards.map((f) => forwardId(f.proto, f.hostAddr ?? '127.0.0.1', f.hostPort)));
    return r.net.forwards().map((f) => {
      const id = forwardId(f.proto, f.hostAddr, f.boundPort);
      return {
        id, proto: f.proto, hostAddr: f.hostAddr || '0.0.0.0', hostPort: f.boundPort, guest: f.guest || addrToString(f.guestIp), guestPort: f.guestPort,
        connections: f.connections, source: runtime.has(id) || runtime.has(forwardId(f.proto, f.hostAddr, f.hostPort)) ? 'runtime' : 'config',
      };
    });
  }

  leases(network?: string): (LeaseInfo & { network: string })[] {
    const nets = network ? [this.get(network)] : [...this.running.values()];
    return nets.flatMap((r) => this.leaseInfo(r).map((l) => ({ ...l, network: r.cfg.name })));
  }

  forwards(network?: string): (ForwardInfo & { network: string })[] {
    const nets = network ? [this.get(network)] : [...this.running.values()];
    return nets.flatMap((r) => this.forwardInfo(r).map((f) => ({ ...f, network: r.cfg.name })));
  }

  async addForward(network: string, spec: ForwardRequest): Promise<ForwardInfo> {
    const r = this.get(network);
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

  removeForward(network: string, id: string): ForwardInfo[] {
    const r = this.get(network);
    const before = this.forwardInfo(r);
    const m = /^(tcp|udp):(?:(.*):)?(\d+)$/.exec(id);
    if (!m) throw new BadRequestError(`'${id}' is not a forward id (PROTO:[HOSTADDR:]HOSTPORT, e.g. tcp:127.0.0.1:8080 or tcp:[::1]:8080)`);
    const proto = m[1] as 'tcp' | 'udp';
    const port = Number(m[3]);
    const given = m[2]?.replace(/^\[(.*)\]$/, '$1');
    const addr = given === undefined ? undefined : given === '0.0.0.0' ? '' : given;
    const gone = r.net.hostfwd.remove(proto, port, addr);
    if (gone.length === 0) throw new NotFoundError(`no forward ${id} on network '${network}' (forwards: ${before.map((f) => f.id).join(', ') || 'none'})`);
    const st = this.store.net(network);
    st.forwards = st.forwards.filter((f) => !(f.proto === proto && f.hostPort === port && (addr === undefined || (f.hostAddr ?? '127.0.0.1') === (addr || '0.0.0.0'))));
    this.store.changed();
    const ids = new Set(gone.map((g) => forwardId(g.proto, g.hostAddr, g.boundPort)));
    return before.filter((f) => ids.has(f.id));
  }

  private findPort(r: Running, key: string): Port {
    for (const sp of r.net.sw.ports.values()) {
      const p = sp.port;
      if (String(p.id) === key || r.net.portOwners.get(p) === key || r.net.sw.macsOn(p).includes(key.toLowerCase())) return p;
    }
    const vmMac = this.store.net(r.cfg.name).macs[key];
    if (vmMac) for (const sp of r.net.sw.ports.values()) if (r.net.sw.macsOn(sp.port).includes(vmMac)) return sp.port;
    throw new NotFoundError(`no port '${key}' on network '${r.cfg.name}' (give a port id, a VM name or a MAC)`);
  }

  startCapture(network: string, file: string, port?: string): { stop(): { frames: number } } {
    const r = this.get(network);
    const p = port ? this.findPort(r, port) : undefined;
    const w = r.net.sw.startCapture(file, p);
    const handle = {
      stop: () => {
        this.captures.delete(handle);
        if (!w.closed) { if (p) r.net.sw.stopCapture(p); else r.net.sw.stopCapture(); }
        return { frames: w.frames };
      },
    };
    this.captures.add(handle);
    return handle;
  }

  metrics(): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, rows: [Record<string, string | number>, number][]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of rows) {
        const l = Object.entries(labels).map(([k, x]) => `${k}="${String(x).replace(/["\\\n]/g, '_')}"`).join(',');
        lines.push(`${name}{${l}} ${v}`);
      }
    };
    const nets = [...this.running.values()];
    const ports = nets.flatMap((r) => this.ports(r).map((p) => ({ net: r.cfg.name, p })));
    const lbl = (x: { net: string; p: PortInfo }) => ({ network: x.net, port: String(x.p.id), vm: x.p.vm ?? '' });
    metric('qnet_port_rx_frames_total', 'counter', 'Frames received from the guest side of a port', ports.map((x) => [lbl(x), x.p.rxFrames]));
    metric('qnet_port_tx_frames_total', 'counter', 'Frames sent to a port', ports.map((x) => [lbl(x), x.p.txFrames]));
    metric('qnet_port_rx_bytes_total', 'counter', 'Bytes received from a port', ports.map((x) => [lbl(x), x.p.rxBytes]));
    metric('qnet_port_tx_bytes_total', 'counter', 'Bytes sent to a port', ports.map((x) => [lbl(x), x.p.txBytes]));
    metric('qnet_port_dropped_total', 'counter', 'Frames dropped on a port by reason',
      ports.flatMap((x) => [...Object.entries(x.p.drops), ['rx', x.p.rxDropped], ['tx', x.p.txDropped]].map(([k, v]) => [{ ...lbl(x), reason: String(k) }, Number(v)] as [Record<string, string>, number])));
    metric('qnet_leases', 'gauge', 'Active DHCP leases', nets.map((r) => [{ network: r.cfg.name }, r.net.dhcp.leases().length]));
    metric('qnet_tcp_connections', 'gauge', 'Guest TCP connections', nets.map((r) => [{ network: r.cfg.name }, r.net.tcp.size]));
    metric('qnet_tcp_retransmits_total', 'counter', 'TCP segments retransmitted towards guests', nets.map((r) => [{ network: r.cfg.name }, r.net.tcp.stats.retransmits]));
    metric('qnet_udp_flows', 'gauge', 'UDP NAT flows', nets.map((r) => [{ network: r.cfg.name }, r.net.udpNat?.size ?? 0]));
    metric('qnet_dns_queries_total', 'counter', 'DNS queries from guests', nets.map((r) => [{ network: r.cfg.name }, r.net.dns.stats.queries]));
    metric('qnet_duplicate_macs', 'gauge', 'MACs seen on two ports', nets.map((r) => [{ network: r.cfg.name }, r.net.duplicates().length]));
    return lines.join('\n') + '\n';
  }

  /** A MAC for a VM name: derived from the names (stable), re-derived on collision (unique). */
  attach(network: string, name: string, model = DEFAULT_MODEL): AttachResult {
    const r = this.get(network);
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) throw new BadRequestError(`'${name}' is not a valid VM name (letters, digits, _ . -)`);
    const st = this.store.net(network);
    let mac = st.macs[name];
    if (!mac) {
      const taken = new Set<string>([
        ...Object.values(st.macs),
        ...r.cfg.hosts.map((h) => h.mac),
        ...[...r.net.sw.ports.values()].flatMap((sp) => r.net.sw.macsOn(sp.port)),
        ...r.net.dhcp.leases().map((l) => l.mac),
      ]);
      for (let i = 0; ; i++) {
        const h = crypto.createHash('sha256').update(`${network}\0${name}\0${i}`).digest();
        mac = `52:54:00:${[h[0], h[1], h[2]].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
        if (!taken.has(mac)) break;
      }
      st.macs[name] = mac;
      this.store.changed();
    }
    r.net.vmMacs.set(name.toLowerCase(), mac);
    const att = r.cfg.attach[0];
    const args = ['-netdev', qemuNetdevFor(att.endpoint, 'qnet0'), '-device', `${model},netdev=qnet0,mac=${mac}`];
    return { network, name, mac, model, args };
  }

  connectVm(vm: VmRecord): void {
    const r = this.get(vm.network);
    if (!vm.name || !vm.sock || !Number.isInteger(vm.pid)) throw new BadRequestError('a VM needs name, sock and pid');
    if (!fs.existsSync(vm.sock)) throw new BadRequestError(`VM ${vm.name}: no QEMU stream socket at ${vm.sock}`);
    this.store.state.vms = this.store.state.vms.filter((v) => v.name !== vm.name);
    this.store.state.vms.push(vm);
    r.net.connectVm(vm.name, { kind: 'unix', path: vm.sock });
    this.store.changed();
    log.info('vm joined', { vm: vm.name, network: vm.network, mac: vm.mac });
  }

  disconnectVm(name: string): void {
    const vm = this.store.state.vms.find((v) => v.name === name);
    if (!vm) throw new NotFoundError(`no VM '${name}'`);
    this.running.get(vm.network)?.net.disconnectVm(name);
    this.store.state.vms = this.store.state.vms.filter((v) => v !== vm);
    this.store.changed();
    log.info('vm left', { vm: name, network: vm.network });
  }

  vms(): VmRecord[] {
    // forget VMs whose QEMU is gone
    const alive = this.store.state.vms.filter((v) => pidAlive(v.pid));
    if (alive.length !== this.store.state.vms.length) {
      for (const v of this.store.state.vms) if (!alive.includes(v)) this.running.get(v.network)?.net.disconnectVm(v.name);
      this.store.state.vms = alive;
      this.store.changed();
    }
    return alive;
  }

  /** How to attach QEMU to each network, for `qnet up`'s banner. */
  banner(): string {
    const out: string[] = [];
    for (const r of this.running.values()) {
      out.push(`network ${r.cfg.name} (${r.cfg.mode}) ${cidr(r.cfg)} gateway ${ip4ToString(r.cfg.gateway)}`);
      r.cfg.attach.forEach((a) => out.push(`  attach: -netdev ${qemuNetdevFor(a.endpoint, 'n0')} -device virtio-net-pci,netdev=n0,mac=52:54:00:XX:XX:XX`));
      out.push(`  or:     qnet run ${r.cfg.name} --name VM -- qemu-system-x86_64 ...`);
    }
    return out.join('\n');
  }
}
