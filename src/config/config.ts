// qnet.yaml: the daemon's configuration. Validated by hand against the same shape as
// schema/qnet.schema.json (for editors); every error names the file, line and key.
//
//   stateDir: ~/.local/state/qnet        # leases, runtime forwards, MAC assignments
//   runtimeDir: /run/user/1000/qnet      # sockets (API, default attach points, VMs)
//   api: { tcp: 127.0.0.1:7070, token: SECRET }   # optional; the unix socket is always on
//   networks:
//     - name: default
//       mode: nat                        # nat | isolated | user
//       subnet: 192.168.122.0/24
//       gateway: 192.168.122.1
//       dhcp: 192.168.122.2-192.168.122.254
//       domain: qnet
//       hosts: [{ mac: 52:54:00:00:00:10, ip: 192.168.122.10, ip6: fd00:122::10, name: db }]
//       subnet6: fd00:122::/64              # IPv6 beside IPv4 (a ULA of your choice)
//       gateway6: fd00:122::1               # default: the prefix's ::1
//       dhcp6: fd00:122::100-fd00:122::1ff  # stateful DHCPv6; default: slaac (RA only)
//       forwards: [{ proto: tcp, hostPort: 8080, guest: web, guestPort: 80 }]
//       limits: { leasesPerPort: 8 }     # what one guest may take
//       attach: [unix:/run/user/1000/qnet/default.sock]
//     - name: lab                          # a kernel network: a Linux bridge carries it (root)
//       mode: nat                        # nat | isolated | routed | open | bridge
//       bridge: qnbr0
//       subnet: 10.10.0.0/24
//       allow: [alice, "@kvm"]             # who may attach VMs (root always may)
//     - name: lan
//       mode: bridge                     # VMs on the LAN; the LAN's DHCP serves them
//       bridge: br0
//       uplink: eth0                       # qnet makes br0, moves eth0's addresses to it and back
//       stp: true
//     - name: sriov
//       mode: hostdev                    # a pool of SR-IOV VFs (one per VM, vfio-pci)
//       pf: enp1s0                       # or a list; PCI addresses work too
//       vlan: 42                         # optional: the PF tags/untags every VF's traffic
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import YAML from 'yaml';
import { parseAttach, type AttachSpec } from '../network/attach.ts';
import { inSubnet, ip4ToString, ip6ToString, maskOf, parseIp4, parseIp6 } from '../wire/addr.ts';
import { KERNEL_ONLY_MODES, type NetworkMode, type ForwardRule } from '../common/types.ts';
import { defaultRuntimeDir, defaultStateDir } from '../common/paths.ts';
import { parseUserCliOptions, type UserCliOptions } from '../qemu/user-network.ts';

/** A static DHCP host: by MAC, or by VM name (`vm:`; the daemon gives that VM a MAC). */
export interface HostEntry { mac: string; ip: number; ip6?: string; name?: string; vm?: string }
/** Per-network limits on what a guest may take (the `limits:` key). */
export interface NetworkLimits {
  /** DHCP pool addresses one switch port may hold (leases, offers, declines); 0: no limit */
  leasesPerPort?: number;
  /** TCP connections per guest port; 0: no limit */
  connectionsPerPort?: number;
  /** of those, half-open (host side still connecting); 0: no limit */
  halfOpenPerPort?: number;
  /** UDP NAT flows per guest port; 0: no limit */
  udpFlowsPerPort?: number;
  /** ICMP echo flows per guest port; 0: no limit */
  pingFlowsPerPort?: number;
  /** addresses a port may send from without a lease or static host (IPv4, IPv6) */
  addressesPerPort?: number;
  addresses6PerPort?: number;
  /** false: guests' source addresses are not checked */
  sourceGuard?: boolean;
}
/** A DNS record: an IPv4 address (ip) or an IPv6 one (ip6, text) */
export interface RecordEntry { name: string; ip?: number; ip6?: string }

/** IPv6 on a shared network. */
export interface Ipv6Config {
  /** the prefix, e.g. fd00:122:: */
  prefix: string;
  prefixLen: number;
  /** the router (and DNS) address */
  gateway: string;
  /** stateful DHCPv6 range; absent: SLAAC only */
  dhcpRange?: { start: string; end: string };
}

export interface NetworkConfig {
  name: string;
  mode: NetworkMode;
  net: number;
  prefix: number;
  gateway: number;
  dhcpStart: number;
  dhcpEnd: number;
  leaseTime?: number;
  domain?: string;
  hosts: HostEntry[];
  records: RecordEntry[];
  upstreams?: { host: string; port: number }[];
  forwards: ForwardRule[];
  mtu: number;
  /** IPv6 beside IPv4 (nat and isolated networks; user networks have it in `user`) */
  ipv6?: Ipv6Config;
  attach: AttachSpec[];
  /** QEMU stream servers to connect to (qnet user --connect) */
  connect?: AttachSpec[];
  /** record every frame (qnet user --pcap) */
  pcap?: string;
  /** mode user: the -netdev user option string, parsed */
  user?: UserCliOptions;
  limits: NetworkLimits;
  /** a kernel network: the Linux bridge that carries it (src/host) */
  bridge?: string;
  /** mode bridge: the NIC qnet enslaves to the bridge (moving its addresses there) */
  uplink?: string;
  /** kernel networks: spanning tree on the bridge */
  stp?: boolean;
  /** kernel networks: who may attach VMs besides root (user names, uids, @group) */
  allow: string[];
  /** mode hostdev: the PFs whose VFs make the pool, and the VLAN every VF gets */
  hostdev?: { pfs: string[]; vlan?: number };
  /** where each key came from, for messages at run time */
  where: Record<string, string>;
}

export interface Config {
  path: string | null;
  stateDir: string;
  runtimeDir: string;
  api: { tcp?: { host: string; port: number; token: string } };
  networks: NetworkConfig[];
  warnings: string[];
}

export class ConfigError extends Error {}

/** The embedded default: one NAT network named `default`, like libvirt's. */
export function defaultConfigText(): string {
  return `networks:
  - name: default
    mode: nat
    subnet: 192.168.122.0/24
    gateway: 192.168.122.1
    dhcp: 192.168.122.2-192.168.122.254
    domain: qnet
`;
}

type Node = unknown;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

class Reader {
  readonly lc = new YAML.LineCounter();
  readonly doc: YAML.Document;
  constructor(readonly file: string, text: string) {
    this.doc = YAML.parseDocument(text, { lineCounter: this.lc, prettyErrors: false });
    if (this.doc.errors.length) {
      const e = this.doc.errors[0];
      const pos = this.lc.linePos(e.pos[0]);
      throw new ConfigError(`${file}:${pos.line}:${pos.col}: YAML syntax error: ${e.message.split('\n')[0]}`);
    }
  }
  at(p: (string | number)[]): string {
    for (let n = p.length; n >= 0; n--) {
      const node = this.doc.getIn(p.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === 'object' && node.range) {
        const pos = this.lc.linePos(node.range[0]);
        return `${this.file}:${pos.line}:${pos.col}`;
      }
    }
    return this.file;
  }
  /** Position of the key itself (for unknown keys). */
  atKey(p: (string | number)[]): string {
    const parent = this.doc.getIn(p.slice(0, -1), true);
    if (YAML.isMap(parent)) {
      const pair = parent.items.find((it) => YAML.isScalar(it.key) && it.key.value === p[p.length - 1]);
      const range = pair && YAML.isScalar(pair.key) ? pair.key.range : undefined;
      if (range) {
        const pos = this.lc.linePos(range[0]);
        return `${this.file}:${pos.line}:${pos.col}`;
      }
    }
    return this.at(p);
  }
  fail(p: (string | number)[], msg: string, key = false): never {
    throw new ConfigError(`${key ? this.atKey(p) : this.at(p)}: ${keyPath(p)}: ${msg}`);
  }
}

function keyPath(p: (string | number)[]): string {
  return p.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? k : `.${k}`)).join('') || '(top)';
}

function isMap(v: Node): v is Record<string, Node> { return typeof v === 'object' && v !== null && !Array.isArray(v); }

function checkKeys(r: Reader, p: (string | number)[], v: Record<string, Node>, allowed: string[]): void {
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) r.fail([...p, k], `unknown key '${k}' (known: ${allowed.join(', ')})`, true);
  }
}

function str(r: Reader, p: (string | number)[], v: Node): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return r.fail(p, `expected a string, got ${JSON.stringify(v)}`);
}

function ipv4(r: Reader, p: (string | number)[], v: Node): number {
  const s = str(r, p, v);
  const ip = parseIp4(s);
  if (ip === null) r.fail(p, `'${s}' is not an IPv4 address`);
  return ip;
}

function int(r: Reader, p: (string | number)[], v: Node, min: number, max: number): number {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) r.fail(p, `expected an integer ${min}-${max}, got ${JSON.stringify(v)}`);
  return n;
}

function list(r: Reader, p: (string | number)[], v: Node): Node[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v;
  if (typeof v === 'string') return [v];
  return r.fail(p, 'expected a list');
}

function hostPortOf(r: Reader, p: (string | number)[], s: string, defPort: number, v6 = false): { host: string; port: number } {
  const m = /^(?:(\d+\.\d+\.\d+\.\d+)|\[([0-9a-fA-F:.]+)\])(?::(\d+))?$/.exec(s);
  if (!m || (m[1] !== undefined ? parseIp4(m[1]) === null : !v6 || parseIp6(m[2]) === null)) r.fail(p, v6 ? `'${s}' is not IPv4[:PORT] or [IPv6][:PORT]` : `'${s}' is not IPv4[:PORT]`);
  const port = m[3] ? Number(m[3]) : defPort;
  if (port < 1 || port > 65535) r.fail(p, `port ${port} is out of range 1-65535`);
  return { host: m[1] ?? m[2], port };
}

/** IPv6 text in canonical form, or a failure naming the key. */
function ipv6(r: Reader, p: (string | number)[], v: Node): string {
  const s = str(r, p, v);
  const b = parseIp6(s);
  if (!b) r.fail(p, `'${s}' is not an IPv6 address`);
  return ip6ToString(b, 0);
}

function v6Prefix(b: Buffer, len: number): Buffer {
  const out = Buffer.from(b);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, len - 8 * i));
    out[i] &= bits === 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
  }
  return out;
}

/** subnet6 / gateway6 / dhcp6 of a shared network. */
function parseIpv6Net(r: Reader, p: (string | number)[], v: Record<string, Node>): { cfg?: Ipv6Config; inNet6: (q: (string | number)[], s: string, what: string) => string } {
  const none = { inNet6: (q: (string | number)[]): string => r.fail(q, 'an IPv6 address needs subnet6 on the network (e.g. subnet6: fd00:1::/64)') };
  if (v.subnet6 === undefined) {
    for (const k of ['gateway6', 'dhcp6']) if (v[k] !== undefined) r.fail([...p, k], `'${k}' needs subnet6 (e.g. subnet6: fd00:1::/64)`);
    return none;
  }
  const s = str(r, [...p, 'subnet6'], v.subnet6);
  const m = /^([0-9a-fA-F:.]+)\/(\d+)$/.exec(s);
  const b = m ? parseIp6(m[1]) : null;
  const len = m ? Number(m[2]) : -1;
  if (!b || len < 48 || len > 120) r.fail([...p, 'subnet6'], `'${s}' is not an IPv6 prefix of length 48-120 (e.g. fd00:1::/64)`);
  const prefix = v6Prefix(b, len);
  if (!prefix.equals(b)) r.fail([...p, 'subnet6'], `'${s}' has host bits set; did you mean ${ip6ToString(prefix, 0)}/${len}?`);
  if (b[0] === 0xff || (b[0] === 0xfe && (b[1] & 0xc0) === 0x80)) r.fail([...p, 'subnet6'], `'${s}' is multicast or link-local: use a global or unique local prefix (fd00::/8)`);
  const inNet6 = (q: (string | number)[], text: string, what: string): string => {
    const a = parseIp6(text);
    if (!a) return r.fail(q, `'${text}' is not an IPv6 address`);
    if (!v6Prefix(a, len).equals(prefix) || a.equals(prefix)) r.fail(q, `${what} ${text} is not a host address in ${s}`);
    return ip6ToString(a, 0);
  };
  const gw = Buffer.from(prefix);
  gw[15] |= 1;
  const gateway = v.gateway6 === undefined ? ip6ToString(gw, 0) : inNet6([...p, 'gateway6'], ipv6(r, [...p, 'gateway6'], v.gateway6), 'gateway6');
  let dhcpRange: Ipv6Config['dhcpRange'];
  if (v.dhcp6 !== undefined && v.dhcp6 !== 'slaac') {
    const q = [...p, 'dhcp6'];
    let a: string, e: string;
    if (isMap(v.dhcp6)) { checkKeys(r, q, v.dhcp6, ['start', 'end']); a = str(r, [...q, 'start'], v.dhcp6.start); e = str(r, [...q, 'end'], v.dhcp6.end); }
    else { [a, e] = str(r, q, v.dhcp6).split('-').map((x) => x.trim()); }
    const start = inNet6(q, a, 'DHCPv6 range start');
    const end = inNet6(q, e ?? '', 'DHCPv6 range end');
    if (Buffer.compare(parseIp6(end)!, parseIp6(start)!) < 0) r.fail(q, `DHCPv6 range ${a}-${e} ends before it starts`);
    const g = parseIp6(gateway)!;
    if (Buffer.compare(g, parseIp6(start)!) >= 0 && Buffer.compare(g, parseIp6(end)!) <= 0) r.fail(q, `DHCPv6 range ${a}-${e} contains the gateway ${gateway}`);
    dhcpRange = { start, end };
  } else if (len !== 64) {
    r.fail([...p, 'subnet6'], `SLAAC needs a /64 prefix; give a /64, or a stateful range (dhcp6: START-END)`);
  }
  return { cfg: { prefix: ip6ToString(prefix, 0), prefixLen: len, gateway, dhcpRange }, inNet6 };
}

export function parseConfig(text: string, file = '(embedded default)', opts: { runtimeDir?: string; stateDir?: string } = {}): Config {
  const r: Reader = new Reader(file, text);
  const top: Node = r.doc.toJS() ?? {};
  if (!isMap(top)) r.fail([], 'the file must be a mapping with a `networks` list');
  checkKeys(r, [], top, ['stateDir', 'runtimeDir', 'api', 'networks']);
  const expand = (s: string) => s.replace(/^~(?=\/|$)/, os.homedir());
  const stateDir = top.stateDir !== undefined ? expand(str(r, ['stateDir'], top.stateDir)) : opts.stateDir ?? defaultStateDir();
  const runtimeDir = top.runtimeDir !== undefined ? expand(str(r, ['runtimeDir'], top.runtimeDir)) : opts.runtimeDir ?? defaultRuntimeDir();
  const warnings: string[] = [];
  const api: Config['api'] = {};
  if (top.api !== undefined) {
    if (!isMap(top.api)) r.fail(['api'], 'expected a mapping');
    checkKeys(r, ['api'], top.api, ['tcp', 'token', 'tokenFile']);
    if (top.api.tcp !== undefined) {
      const hp = hostPortOf(r, ['api', 'tcp'], str(r, ['api', 'tcp'], top.api.tcp), 7070);
      if (!hp.host.startsWith('127.')) r.fail(['api', 'tcp'], `the TCP API listens on loopback only (127.0.0.0/8), not ${hp.host}`);
      let token = top.api.token !== undefined ? str(r, ['api', 'token'], top.api.token) : '';
      if (top.api.tokenFile !== undefined) {
        const f = expand(str(r, ['api', 'tokenFile'], top.api.tokenFile));
        try { token = fs.readFileSync(f, 'utf8').trim(); } catch (e) { r.fail(['api', 'tokenFile'], `cannot read ${f}: ${(e as Error).message}`); }
      }
      if (token.length < 16) r.fail(['api', 'token'], 'the TCP API needs a token of at least 16 characters (api.token or api.tokenFile)');
      api.tcp = { ...hp, token };
    }
  }
  const nets = top.networks;
  if (!Array.isArray(nets) || nets.length === 0) r.fail(['networks'], 'expected a non-empty list of networks');
  const networks = nets.map((n, i) => parseNetwork(r, ['networks', i], n, runtimeDir));
  // cross-network checks
  const names = new Set<string>();
  const attachSeen = new Map<string, { net: NetworkConfig; idx: number }>();
  const bridges = new Map<string, string>();
  networks.forEach((n, i) => {
    if (names.has(n.name)) r.fail(['networks', i, 'name'], `network '${n.name}' is defined twice`);
    names.add(n.name);
    if (n.bridge) {
      if (bridges.has(n.bridge)) r.fail(['networks', i, 'bridge'], `bridge ${n.bridge} is already network '${bridges.get(n.bridge)}'s; give each kernel network its own bridge`);
      bridges.set(n.bridge, n.name);
    }
    n.attach.forEach((a, j) => {
      const key = attachKey(a);
      const prev = attachSeen.get(key);
      if (prev) {
        const overlap = subnetsOverlap(prev.net, n);
        r.fail(['networks', i, 'attach', j], `attach point ${a.text} is already used by network '${prev.net.name}'${overlap ? ` (and the subnets ${cidr(prev.net)} and ${cidr(n)} overlap: a guest could not tell them apart)` : ''}; give each network its own socket`);
      }
      attachSeen.set(key, { net: n, idx: j });
    });
  });
  const pfSeen = new Map<string, string>();
  networks.forEach((n, i) => n.hostdev?.pfs.forEach((pf, j) => {
    const prev = pfSeen.get(pf);
    if (prev) r.fail(['networks', i, 'pf', j], `PF ${pf} is already the pool of network '${prev}'; a VF can belong to one network only`);
    pfSeen.set(pf, n.name);
  }));
  for (let i = 0; i < networks.length; i++) {
    for (let j = i + 1; j < networks.length; j++) {
      if (networks[i].mode === 'hostdev' || networks[j].mode === 'hostdev') continue; // no subnet of qnet's
      if (subnetsOverlap(networks[i], networks[j]) && networks[i].mode !== 'user' && networks[j].mode !== 'user' && networks[i].mode !== 'bridge' && networks[j].mode !== 'bridge') {
        warnings.push(`${r.at(['networks', j, 'subnet'])}: networks '${networks[i].name}' and '${networks[j].name}' have overlapping subnets ${cidr(networks[i])} and ${cidr(networks[j])}; forwards by address may be ambiguous`);
      }
    }
  }
  return { path: file, stateDir, runtimeDir, api, networks, warnings };
}

function attachKey(a: AttachSpec): string {
  const e = a.endpoint;
  switch (e.kind) {
    case 'stream': return e.addr.kind === 'unix' ? `unix:${path.resolve(e.addr.path)}` : `tcp:${e.addr.host}:${e.addr.port}`;
    case 'udp': return `udp:${e.local.host}:${e.local.port}`;
    case 'unixgram': return `unixgram:${path.resolve(e.path)}`;
    case 'mcast': return `mcast:${e.group.host}:${e.group.port}`;
  }
}

export function cidr(n: { net: number; prefix: number }): string { return `${ip4ToString(n.net)}/${n.prefix}`; }

function subnetsOverlap(a: NetworkConfig, b: NetworkConfig): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return ((a.net & maskOf(p)) >>> 0) === ((b.net & maskOf(p)) >>> 0);
}

const NET_KEYS = ['name', 'mode', 'subnet', 'gateway', 'dhcp', 'subnet6', 'gateway6', 'dhcp6', 'leaseTime', 'domain', 'hosts', 'records', 'upstreams', 'forwards', 'mtu', 'attach', 'options', 'bridge', 'uplink', 'stp', 'allow', 'pf', 'vlan', 'limits'];
/** A VF pool's keys: nothing of a network whose traffic passes qnet or a kernel bridge. */
const HOSTDEV_KEYS = ['name', 'mode', 'pf', 'vlan'];
const LIMIT_KEYS = ['leasesPerPort', 'connectionsPerPort', 'halfOpenPerPort', 'udpFlowsPerPort', 'pingFlowsPerPort', 'addressesPerPort', 'addresses6PerPort', 'sourceGuard'];

function parseLimits(r: Reader, p: (string | number)[], v: Node): NetworkLimits {
  if (v === undefined || v === null) return {};
  if (!isMap(v)) r.fail(p, `expected a mapping of limits (${LIMIT_KEYS.join(', ')})`);
  checkKeys(r, p, v, LIMIT_KEYS);
  const out: NetworkLimits = {};
  if (v.leasesPerPort !== undefined) out.leasesPerPort = int(r, [...p, 'leasesPerPort'], v.leasesPerPort, 0, 65535);
  if (v.connectionsPerPort !== undefined) out.connectionsPerPort = int(r, [...p, 'connectionsPerPort'], v.connectionsPerPort, 0, 1 << 20);
  if (v.halfOpenPerPort !== undefined) out.halfOpenPerPort = int(r, [...p, 'halfOpenPerPort'], v.halfOpenPerPort, 0, 1 << 20);
  if (v.udpFlowsPerPort !== undefined) out.udpFlowsPerPort = int(r, [...p, 'udpFlowsPerPort'], v.udpFlowsPerPort, 0, 1 << 20);
  if (v.pingFlowsPerPort !== undefined) out.pingFlowsPerPort = int(r, [...p, 'pingFlowsPerPort'], v.pingFlowsPerPort, 0, 65535);
  if (v.addressesPerPort !== undefined) out.addressesPerPort = int(r, [...p, 'addressesPerPort'], v.addressesPerPort, 1, 65535);
  if (v.addresses6PerPort !== undefined) out.addresses6PerPort = int(r, [...p, 'addresses6PerPort'], v.addresses6PerPort, 1, 65535);
  if (v.sourceGuard !== undefined) {
    if (typeof v.sourceGuard !== 'boolean') r.fail([...p, 'sourceGuard'], `expected true or false, got ${JSON.stringify(v.sourceGuard)}`);
    out.sourceGuard = v.sourceGuard;
  }
  return out;
}

const IFNAME_RE = /^[A-Za-z0-9_.:@+-]{1,15}$/;

/** The kernel-network keys (bridge, uplink, stp, allow), checked against the mode. */
function parseKernelKeys(r: Reader, p: (string | number)[], v: Record<string, Node>, mode: string): Pick<NetworkConfig, 'bridge' | 'uplink' | 'stp' | 'allow'> {
  const bridge = v.bridge === undefined ? undefined : str(r, [...p, 'bridge'], v.bridge);
  if (bridge !== undefined && (!IFNAME_RE.test(bridge) || bridge === '.' || bridge === '..')) r.fail([...p, 'bridge'], `'${bridge}' is not a Linux interface name (1-15 letters, digits, _ . - : @ +)`);
  if (bridge === undefined) {
    if (KERNEL_ONLY_MODES.includes(mode as NetworkMode)) r.fail([...p, 'mode'], `mode ${mode} needs a kernel bridge: add bridge: NAME (qnet creates it, as root)`);
    for (const k of ['uplink', 'stp', 'allow']) if (v[k] !== undefined) r.fail([...p, k], `'${k}' is for kernel networks: add bridge: NAME, or drop '${k}'`, true);
    return { allow: [] };
  }
  if (mode === 'user') r.fail([...p, 'bridge'], 'mode user is QEMU\'s -netdev user served by qnet; a bridge network is nat, isolated, routed, open or bridge');
  let uplink: string | undefined;
  if (v.uplink !== undefined) {
    if (mode !== 'bridge') r.fail([...p, 'uplink'], `uplink: is for mode bridge (VMs on the NIC's LAN); mode ${mode} reaches out through the host's routes`, true);
    uplink = str(r, [...p, 'uplink'], v.uplink);
    if (!IFNAME_RE.test(uplink)) r.fail([...p, 'uplink'], `'${uplink}' is not a Linux interface name`);
    if (uplink === bridge) r.fail([...p, 'uplink'], 'the uplink is the NIC that joins the bridge, not the bridge itself');
  }
  let stp: boolean | undefined;
  if (v.stp !== undefined) {
    if (typeof v.stp !== 'boolean') r.fail([...p, 'stp'], `expected true or false, got ${JSON.stringify(v.stp)}`);
    stp = v.stp;
  }
  const allow = list(r, [...p, 'allow'], v.allow).map((a, j) => {
    const s = str(r, [...p, 'allow', j], a);
    if (!/^@?[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(s)) r.fail([...p, 'allow', j], `'${s}' is not a user name, uid, @group or @gid`);
    return s;
  });
  return { bridge, uplink, stp, allow };
}

function parseNetwork(r: Reader, p: (string | number)[], v: Node, runtimeDir: string): NetworkConfig {
  if (!isMap(v)) r.fail(p, 'expected a mapping with name, mode, subnet, ...');
  checkKeys(r, p, v, NET_KEYS);
  const name = str(r, [...p, 'name'], v.name);
  if (!NAME_RE.test(name)) r.fail([...p, 'name'], `'${name}' is not a valid network name (letters, digits, _ . -; up to 64)`);
  const mode = (v.mode ?? 'nat') as string;
  if (!['nat', 'isolated', 'user', 'hostdev', ...KERNEL_ONLY_MODES].includes(mode)) r.fail([...p, 'mode'], `unknown mode '${mode}' (nat, isolated, user or hostdev; on a bridge: also routed, open or bridge)`);
  if (mode === 'hostdev') return parseHostdevNetwork(r, p, v, name);
  for (const k of ['pf', 'vlan']) if (v[k] !== undefined) r.fail([...p, k], `'${k}' is for mode hostdev (a pool of SR-IOV VFs), not mode ${mode}`, true);
  const kernel = parseKernelKeys(r, p, v, mode);
  if (kernel.bridge && v.attach !== undefined) r.fail([...p, 'attach'], `a kernel network (bridge: ${kernel.bridge}) is joined through taps (qnet run, -netdev tap/bridge), not attach points`, true);
  const where: Record<string, string> = {};
  const attach = list(r, [...p, 'attach'], v.attach).map((a, j) => {
    where[`attach.${j}`] = r.at([...p, 'attach', j]);
    try { return parseAttach(str(r, [...p, 'attach', j], a)); } catch (e) { return r.fail([...p, 'attach', j], (e as Error).message); }
  });
  if (attach.length === 0 && !kernel.bridge) attach.push(parseAttach(`unix:${path.join(runtimeDir, `${name}.sock`)}`));
  where.attach = r.at([...p, 'attach']);
  const mtu = v.mtu === undefined ? 1500 : int(r, [...p, 'mtu'], v.mtu, 576, 65521);

  if (mode === 'user') {
    for (const k of ['subnet', 'gateway', 'dhcp', 'subnet6', 'gateway6', 'dhcp6', 'hosts', 'records', 'domain', 'leaseTime']) {
      if (v[k] !== undefined) r.fail([...p, k], `mode user takes QEMU's -netdev user options in 'options' (e.g. net=, host=, dhcpstart=), not '${k}'`);
    }
    let user: UserCliOptions;
    try { user = parseUserCliOptions(v.options === undefined ? '' : str(r, [...p, 'options'], v.options)); } catch (e) { return r.fail([...p, 'options'], (e as Error).message); }
    const upstreams = v.upstreams !== undefined ? list(r, [...p, 'upstreams'], v.upstreams).map((u, j) => hostPortOf(r, [...p, 'upstreams', j], str(r, [...p, 'upstreams', j], u), 53, true)) : user.dnsUpstreams;
    return { ...userNetworkConfig(name, { ...user, dnsUpstreams: upstreams, mtu: user.mtu ?? mtu }, attach), forwards: parseForwards(r, p, v.forwards), limits: parseLimits(r, [...p, 'limits'], v.limits), where };
  }
  if (mode === 'bridge') {
    // VMs on the LAN: addressing, DHCP and DNS are the LAN's
    for (const k of ['subnet', 'gateway', 'dhcp', 'leaseTime', 'domain', 'hosts', 'records', 'upstreams', 'forwards', 'limits']) {
      if (v[k] !== undefined) r.fail([...p, k], `mode bridge puts VMs on the LAN of ${kernel.uplink ?? kernel.bridge}: its own DHCP and routers serve them, so '${k}' has no meaning here`, true);
    }
    return { name, mode: 'bridge', net: 0, prefix: 0, gateway: 0, dhcpStart: 0, dhcpEnd: 0, hosts: [], records: [], forwards: [], mtu: v.mtu === undefined ? 0 : mtu, attach, limits: {}, where, ...kernel };
  }
  if (v.options !== undefined) r.fail([...p, 'options'], `'options' (QEMU -netdev user options) is only for mode user`);
  const sub = str(r, [...p, 'subnet'], v.subnet ?? r.fail([...p], 'a nat or isolated network needs a subnet, e.g. subnet: 192.168.122.0/24'));
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(sub);
  const addr = m ? parseIp4(m[1]) : null;
  const prefix = m ? Number(m[2]) : -1;
  if (addr === null || prefix < 8 || prefix > 30) r.fail([...p, 'subnet'], `'${sub}' is not an IPv4 subnet with a prefix of 8-30 (e.g. 192.168.122.0/24)`);
  const net = (addr & maskOf(prefix)) >>> 0;
  if (net !== addr) r.fail([...p, 'subnet'], `'${sub}' has host bits set; did you mean ${ip4ToString(net)}/${prefix}?`);
  const bcast = (net | ~maskOf(prefix)) >>> 0;
  const inNet = (q: (string | number)[], ip: number, what: string) => {
    if (!inSubnet(ip, net, prefix) || ip === net || ip === bcast) r.fail(q, `${what} ${ip4ToString(ip)} is not a host address in ${sub}`);
    return ip;
  };
  const gateway = v.gateway === undefined ? net + 1 : inNet([...p, 'gateway'], ipv4(r, [...p, 'gateway'], v.gateway), 'gateway');
  let dhcpStart = gateway + 1 < bcast ? gateway + 1 : net + 1;
  let dhcpEnd = bcast - 1;
  if (v.dhcp !== undefined) {
    const ranges = isMap(v.dhcp) ? [v.dhcp] : list(r, [...p, 'dhcp'], v.dhcp);
    if (ranges.length !== 1) r.fail([...p, 'dhcp'], 'give exactly one DHCP range START-END');
    const q = isMap(v.dhcp) ? [...p, 'dhcp'] : [...p, 'dhcp', 0];
    const rv = ranges[0];
    let s: string, e: string;
    if (isMap(rv)) { checkKeys(r, q, rv, ['start', 'end']); s = str(r, [...q, 'start'], rv.start); e = str(r, [...q, 'end'], rv.end); }
    else { [s, e] = str(r, q, rv).split('-').map((x) => x.trim()); }
    dhcpStart = inNet(q, ipv4(r, q, s), 'DHCP range start');
    dhcpEnd = inNet(q, ipv4(r, q, e ?? ''), 'DHCP range end');
    if (dhcpEnd < dhcpStart) r.fail(q, `DHCP range ${s}-${e} ends before it starts`);
    if (gateway >= dhcpStart && gateway <= dhcpEnd) r.fail(q, `DHCP range ${s}-${e} contains the gateway ${ip4ToString(gateway)}`);
  }
  const v6 = parseIpv6Net(r, p, v);
  if (kernel.bridge && v6.cfg) r.fail([...p, 'subnet6'], `IPv6 (subnet6) is not served on kernel networks yet (bridge: ${kernel.bridge}); drop it, or use a userspace network`, true);
  const hosts = list(r, [...p, 'hosts'], v.hosts).map((h, j): HostEntry => {
    const q = [...p, 'hosts', j];
    if (!isMap(h)) r.fail(q, 'expected { mac, ip, ip6, name } or { vm, ip, ip6 }');
    checkKeys(r, q, h, ['mac', 'vm', 'ip', 'ip6', 'name']);
    if ((h.mac === undefined) === (h.vm === undefined)) r.fail(q, 'give the host either mac: (its NIC) or vm: (a VM name; qnet gives that VM its MAC)');
    let mac = '';
    let vm: string | undefined;
    if (h.mac !== undefined) {
      mac = str(r, [...q, 'mac'], h.mac).toLowerCase();
      if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac)) r.fail([...q, 'mac'], `'${mac}' is not a MAC address (aa:bb:cc:dd:ee:ff)`);
      if (parseInt(mac.slice(0, 2), 16) & 1) r.fail([...q, 'mac'], `'${mac}' is a multicast MAC; a NIC needs a unicast one`);
    } else {
      vm = str(r, [...q, 'vm'], h.vm);
      if (!NAME_RE.test(vm)) r.fail([...q, 'vm'], `'${vm}' is not a valid VM name (letters, digits, _ . -)`);
    }
    const name = h.name === undefined ? (vm && /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})$/.test(vm) ? vm : undefined) : str(r, [...q, 'name'], h.name);
    if (name !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})$/.test(name)) r.fail([...q, 'name'], `'${name}' is not a valid host name`);
    const ip6 = h.ip6 === undefined ? undefined : v6.inNet6([...q, 'ip6'], str(r, [...q, 'ip6'], h.ip6), 'host IPv6 address');
    return { mac, ip: inNet([...q, 'ip'], ipv4(r, [...q, 'ip'], h.ip), 'host address'), ...(ip6 ? { ip6 } : {}), name, ...(vm ? { vm } : {}) };
  });
  const records = list(r, [...p, 'records'], v.records).map((h, j): RecordEntry => {
    const q = [...p, 'records', j];
    if (!isMap(h)) r.fail(q, 'expected { name, ip } (ip: an IPv4 or IPv6 address)');
    checkKeys(r, q, h, ['name', 'ip']);
    const text = str(r, [...q, 'ip'], h.ip);
    const name = str(r, [...q, 'name'], h.name);
    return text.includes(':') ? { name, ip6: ipv6(r, [...q, 'ip'], text) } : { name, ip: ipv4(r, [...q, 'ip'], text) };
  });
  const upstreams = v.upstreams === undefined ? undefined : list(r, [...p, 'upstreams'], v.upstreams).map((u, j) => hostPortOf(r, [...p, 'upstreams', j], str(r, [...p, 'upstreams', j], u), 53, true));
  if (mode === 'isolated' && upstreams?.length) r.fail([...p, 'upstreams'], 'an isolated network has no way out, so no DNS upstreams');
  const domain = v.domain === undefined ? undefined : str(r, [...p, 'domain'], v.domain);
  if (domain !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(domain)) r.fail([...p, 'domain'], `'${domain}' is not a DNS domain`);
  const forwards = parseForwards(r, p, v.forwards, kernel.bridge !== undefined);
  if (kernel.bridge && forwards.length && mode !== 'nat') {
    r.fail([...p, 'forwards'], mode === 'isolated' ? 'an isolated network has no way in: forwards need mode nat'
      : `a ${mode} network's guests are reachable at their own addresses; forwards (DNAT) are for mode nat`, true);
  }
  return {
    name, mode: mode as NetworkMode, net, prefix, gateway, dhcpStart, dhcpEnd,
    leaseTime: v.leaseTime === undefined ? undefined : int(r, [...p, 'leaseTime'], v.leaseTime, 60, 365 * 86400),
    domain, hosts, records, upstreams, forwards, mtu, attach, limits: parseLimits(r, [...p, 'limits'], v.limits), where, ...kernel,
    ...(v6.cfg ? { ipv6: v6.cfg } : {}),
  };
}

/**
 * mode hostdev: a pool of SR-IOV VFs (libvirt's <forward mode='hostdev'>). qnet has no data path
 * here (the VM drives the VF), so there is no subnet, DHCP or attach point: only the PFs and
 * an optional VLAN. Whether the PFs exist is checked when the daemon starts the network.
 */
function parseHostdevNetwork(r: Reader, p: (string | number)[], v: Record<string, Node>, name: string): NetworkConfig {
  for (const k of Object.keys(v)) {
    if (!HOSTDEV_KEYS.includes(k)) r.fail([...p, k], `mode hostdev takes ${HOSTDEV_KEYS.join(', ')}; '${k}' is for networks qnet switches itself or puts on a kernel bridge (on a VF pool the VM drives its VF directly)`, true);
  }
  if (v.pf === undefined) r.fail(p, 'a hostdev network needs pf: the SR-IOV NIC(s) whose VFs make the pool, e.g. pf: enp1s0 (see qnet host devices)');
  const pfs = list(r, [...p, 'pf'], v.pf).map((x, j) => {
    const s = str(r, [...p, 'pf', j], x);
    if (!/^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,31}$/.test(s)) r.fail([...p, 'pf', j], `'${s}' is not an interface name or PCI address`);
    return s;
  });
  if (pfs.length === 0) r.fail([...p, 'pf'], 'give at least one PF');
  const vlan = v.vlan === undefined ? undefined : int(r, [...p, 'vlan'], v.vlan, 1, 4094);
  return {
    name, mode: 'hostdev', net: 0, prefix: 0, gateway: 0, dhcpStart: 0, dhcpEnd: 0, hosts: [], records: [], forwards: [], mtu: 1500,
    attach: [], allow: [], limits: {}, hostdev: { pfs, ...(vlan !== undefined ? { vlan } : {}) }, where: { pf: r.at([...p, 'pf']) },
  };
}

/** A mode-user network from a parsed -netdev user option string. */
export function userNetworkConfig(name: string, user: UserCliOptions, attach: AttachSpec[], extra: { connect?: AttachSpec[]; pcap?: string } = {}): NetworkConfig {
  const c = user.config;
  return {
    name, mode: 'user', net: parseIp4(c.net)!, prefix: c.prefixLength ?? 24, gateway: parseIp4(c.host)!, dhcpStart: parseIp4(c.dhcpstart)!, dhcpEnd: 0,
    hosts: [], records: [], upstreams: user.dnsUpstreams, forwards: [], mtu: user.mtu ?? 1500, attach, user, allow: [], limits: {}, where: {}, ...extra,
  };
}

/**
 * Forwards. On a kernel network they are DNAT on the host's addresses: without hostAddr every
 * local address of the host (''), and never loopback (127/8 cannot be routed to a bridge).
 */
function parseForwards(r: Reader, p: (string | number)[], v: Node, kernel = false): ForwardRule[] {
  return list(r, [...p, 'forwards'], v).map((f, j): ForwardRule => {
    const q = [...p, 'forwards', j];
    if (!isMap(f)) r.fail(q, 'expected { proto, hostPort, guest, guestPort }');
    checkKeys(r, q, f, ['proto', 'hostAddr', 'hostPort', 'guest', 'guestPort']);
    const proto = (f.proto ?? 'tcp') as string;
    if (proto !== 'tcp' && proto !== 'udp') r.fail([...q, 'proto'], `'${proto}' is not tcp or udp`);
    const hostAddr = f.hostAddr === undefined ? (kernel ? '' : '127.0.0.1') : str(r, [...q, 'hostAddr'], f.hostAddr);
    if (hostAddr !== '' && hostAddr !== '0.0.0.0' && parseIp4(hostAddr) === null) r.fail([...q, 'hostAddr'], `'${hostAddr}' is not an IPv4 address`);
    if (kernel && hostAddr.startsWith('127.')) r.fail([...q, 'hostAddr'], 'a kernel network forwards with DNAT on the host\'s addresses, and loopback cannot be routed to a bridge: leave hostAddr out (every address of the host) or give one of them');
    if (kernel && f.hostPort === 0) r.fail([...q, 'hostPort'], 'a kernel network\'s forward needs a fixed hostPort (DNAT rules have no port to pick)');
    return {
      proto: proto as 'tcp' | 'udp', hostAddr, hostPort: int(r, [...q, 'hostPort'], f.hostPort, 0, 65535),
      guest: str(r, [...q, 'guest'], f.guest), guestPort: int(r, [...q, 'guestPort'], f.guestPort, 1, 65535),
    };
  });
}

/** Read and validate a config file (or the embedded default when file is null). */
export function loadConfig(file: string | null, opts: { runtimeDir?: string; stateDir?: string } = {}): Config {
  if (file === null) return { ...parseConfig(defaultConfigText(), '(embedded default)', opts), path: null };
  let text: string;
  try { text = fs.readFileSync(file, 'utf8'); } catch (e) { throw new ConfigError(`${file}: cannot read: ${(e as Error).message}`); }
  return parseConfig(text, file, opts);
}
