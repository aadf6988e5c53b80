// Reads a QEMU command line into a network model (NICs, netdevs, hubs) and
// checks it, in the order and with the verdicts QEMU 7.2 itself would reach:
// errors are what make QEMU refuse to start, warnings are what QEMU accepts
// but is likely wrong (QEMU's own start-up warnings among them).
import { tokenize, type Token, type NetOptionName } from './args.ts';
import {
  BACKENDS, LEGACY_MODEL_LIST, LEGACY_NIC_OPTIONS, NIC_MODELS, QEMU_DEFAULT_MAC, deviceProperties, findNicModel,
  legacyModelName, machineInfo, type BackendSpec, type MachineInfo, type OptSpec,
} from './model.ts';
import { formatQemuOpts, inetAton, isDottedQuad, parseBool, parseCInt, parseQemuOpts, parseSize, type OptEntry } from './opts.ts';
import { parseUserNetdev, type UserNetdevConfig } from './user-options.ts';
import { macToString, parseQemuMac } from '../wire/addr.ts';

export type Severity = 'error' | 'warning' | 'note';

export interface Diagnostic {
  severity: Severity;
  /** Stable identifier of the check, e.g. 'unknown-option'. */
  code: string;
  /** The option as written, e.g. '-netdev user,id=n0,foo=1'. */
  option?: string;
  message: string;
  /** How to fix it. */
  hint?: string;
}

export type Origin = '-netdev' | '-net' | '-nic';

export interface Netdev {
  id: string;
  type: string;
  /** Backend options without type and id. */
  entries: OptEntry[];
  origin: Origin;
  source: string;
  /** Hub this legacy -net backend sits on (its old vlan). */
  hub?: number;
  /** For hubport netdevs. */
  hubid?: number;
  /** hubport's netdev= */
  link?: string;
  user?: UserNetdevConfig;
  json?: boolean;
  /** The -netdev argument as written. */
  raw?: string;
  /** Position of the option among the command line's tokens. */
  pos: number;
  /** Auto-generated id (legacy -net/-nic without id). */
  autoId?: boolean;
}

export interface Nic {
  /** Display name: device id, or model.N as QEMU names it. */
  name: string;
  /** Device id= if any. */
  id?: string;
  model: string;
  /** Model as written (alias or 'virtio'), when different. */
  writtenModel?: string;
  mac?: string;
  addr?: string;
  bus?: string;
  vectors?: string;
  /** Other device properties, as written. */
  props: OptEntry[];
  netdev?: string;
  hub?: number;
  origin: '-device' | '-net' | '-nic';
  source: string;
  json?: boolean;
  /** The -device argument as written. */
  raw?: string;
  pos: number;
}

export interface Hostdev {
  driver: string;
  host?: string;
  sysfsdev?: string;
  id?: string;
  addr?: string;
  props: OptEntry[];
  source: string;
}

export interface Analysis {
  tokens: Token[];
  machine: MachineInfo;
  machineType?: string;
  nodefaults: boolean;
  netdevs: Netdev[];
  nics: Nic[];
  hostdevs: Hostdev[];
  /** -net none / -nic none seen. */
  noneNet: boolean;
  /** No network option at all: QEMU adds its default NIC on user networking. */
  defaultNet: boolean;
  diagnostics: Diagnostic[];
  /** Per-token: index into tokens of network items handled. */
  help?: string;
}

const ID_RE = /^[A-Za-z][A-Za-z0-9_.-]*$/;
const USB_CONTROLLERS = /^(qemu-xhci|nec-usb-xhci|ich9-usb-[eu]hci\d|piix[34]-usb-uhci|pci-ohci|usb-ehci|sysbus-ohci)$/;

export function optionText(t: { written: string; value: string }): string {
  return `${t.written.replace(/^[\u2010-\u2015\u2212\uFE63\uFF0D]/, '-')} ${t.value}`;
}

/** PCI address 'slot[.fn]' (hex) as -device addr= takes it. */
export function parsePciAddr(s: string): { slot: number; fn: number } | undefined {
  const m = /^(?:0x)?([0-9a-fA-F]{1,2})(?:\.([0-7]))?$/.exec(s);
  if (!m) return undefined;
  const slot = parseInt(m[1], 16);
  if (slot > 0x1f) return undefined;
  return { slot, fn: m[2] ? parseInt(m[2], 10) : 0 };
}

function pciKey(a: { slot: number; fn: number }): string {
  return `${a.slot.toString(16)}.${a.fn}`;
}

interface Ctx {
  diags: Diagnostic[];
  netdevs: Netdev[];
  nics: Nic[];
  chardevs: Set<string>;
  deviceIds: Set<string>;
  machine: MachineInfo;
  usb: boolean;
  binds: Array<{ proto: 'tcp' | 'udp'; host: string; port: number; what: string; opt: string }>;
  help?: string;
}

function diag(ctx: Ctx, severity: Severity, code: string, option: string | undefined, message: string, hint?: string): void {
  ctx.diags.push({ severity, code, ...(option ? { option } : {}), message, ...(hint ? { hint } : {}) });
}

/** Check one typed option value; returns an error text or undefined. */
function checkValue(spec: OptSpec, value: string): string | undefined {
  switch (spec.type) {
    case 'bool':
      return parseBool(value) === undefined ? `Parameter '${spec.name}' expects 'on' or 'off'` : undefined;
    case 'int': {
      const n = parseCInt(value);
      if (n === undefined) return `Parameter '${spec.name}' expects a number`;
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        return `Parameter '${spec.name}' is out of range: ${value} (must be ${spec.min ?? '-'}..${spec.max ?? '-'})`;
      }
      return undefined;
    }
    case 'size':
      return parseSize(value) === undefined ? `Parameter '${spec.name}' expects a size value (bytes, or with k/M/G suffix)` : undefined;
    default:
      return undefined;
  }
}

/** socket backend host:port (parse_host_port): the ':' is required; the port must be numeric. */
function checkHostPort(ctx: Ctx, opt: string, key: string, v: string): { host: string; port: number } | undefined {
  const c = v.lastIndexOf(':');
  if (c < 0) {
    diag(ctx, 'error', 'bad-address', opt, `${key}: host address '${v}' doesn't contain ':' separating host from port`, `write ${key}=HOST:PORT, e.g. ${key}=127.0.0.1:1234`);
    return undefined;
  }
  const host = v.slice(0, c);
  const portStr = v.slice(c + 1);
  const port = /^\d+$/.test(portStr) ? parseInt(portStr, 10) : NaN;
  if (Number.isNaN(port)) {
    diag(ctx, 'error', 'bad-port', opt, `${key}: port '${portStr}' is not a number`, `write ${key}=HOST:PORT with a port from 1 to 65535`);
    return undefined;
  }
  if (port > 65535 || port === 0) {
    // QEMU truncates the port to 16 bits instead of refusing it.
    diag(ctx, 'warning', 'bad-port', opt, `${key}: port ${port} is outside 1..65535; QEMU silently uses port ${port & 0xffff} instead`, 'use a port from 1 to 65535');
  }
  if (host !== '' && !isDottedQuad(host)) {
    if (inetAton(host) === undefined && !/^[A-Za-z0-9.-]+$/.test(host)) {
      diag(ctx, 'error', 'bad-address', opt, `${key}: '${host}' is neither an IPv4 address nor a host name`, 'use an IPv4 address such as 127.0.0.1');
    } else if (inetAton(host) === undefined) {
      diag(ctx, 'note', 'hostname', opt, `${key}: host name '${host}' is resolved through DNS when QEMU starts`);
    }
  }
  return { host, port };
}

/**
 * Two things in one command line binding the same host port: the second fails
 * with EADDRINUSE at start-up. A wildcard address overlaps every address for TCP.
 */
function bindHost(ctx: Ctx, opt: string, proto: 'tcp' | 'udp', host: string, port: number, what: string): void {
  if (port <= 0) return;
  const any = (h: string) => h === '' || h === '0.0.0.0' || h === '0';
  const prev = ctx.binds.find((b) => b.proto === proto && b.port === port && (b.host === host || (proto === 'tcp' && (any(b.host) || any(host)))));
  if (prev) {
    diag(ctx, 'error', 'port-conflict', opt, `${what}: host ${proto.toUpperCase()} port ${port}${host ? ` on ${host}` : ''} is already taken by ${prev.what} in ${prev.opt}; QEMU fails with 'Address already in use'`, 'use a different port');
    return;
  }
  ctx.binds.push({ proto, host, port, what, opt });
}

/** Generic per-option checks: unknown keys, short-form booleans, typed values. Returns false on error. */
function checkEntries(ctx: Ctx, opt: string, spec: BackendSpec | { name: string; options: OptSpec[] }, entries: OptEntry[], what: string): boolean {
  let ok = true;
  const byName = new Map(spec.options.map((s) => [s.name, s]));
  for (const e of entries) {
    const s = byName.get(e.key);
    if (!s) {
      if (e.key === 'vlan') {
        diag(ctx, 'error', 'vlan-removed', opt, "Invalid parameter 'vlan': -net's vlan= was removed in QEMU 3.0",
          "drop vlan= (all -net options share hub 0), or run 'qnet qemu convert' to turn each vlan into hubport netdevs");
      } else if (e.key === 'name') {
        diag(ctx, 'error', 'unknown-option', opt, "Invalid parameter 'name': name= was removed from -net", 'use id= instead');
      } else {
        diag(ctx, 'error', 'unknown-option', opt, `Invalid parameter '${e.key}'`, `valid options for ${what}: ${spec.options.map((x) => x.name).join(', ')}`);
      }
      ok = false;
      continue;
    }
    if (e.shortBool) {
      if (s.type !== 'bool') {
        diag(ctx, 'error', 'bad-value', opt, `Parameter '${e.key}' needs a value`, `write ${e.key}=VALUE`);
        ok = false;
        continue;
      }
      diag(ctx, 'warning', 'short-bool', opt, `short-form boolean option '${e.value === 'off' ? 'no' : ''}${e.key}' is deprecated`, `write ${e.key}=${e.value}`);
    }
    const err = checkValue(s, e.value);
    if (err) {
      diag(ctx, 'error', 'bad-value', opt, err);
      ok = false;
    }
  }
  return ok;
}

function get(entries: OptEntry[], key: string): string | undefined {
  let v: string | undefined;
  for (const e of entries) if (e.key === key) v = e.value;
  return v;
}

function has(entries: OptEntry[], key: string): boolean {
  return entries.some((e) => e.key === key);
}

/** Backend-specific rules; returns false on error. */
function checkBackend(ctx: Ctx, opt: string, nd: Netdev): boolean {
  const e = nd.entries;
  const err = (code: string, msg: string, hint?: string) => { diag(ctx, 'error', code, opt, msg, hint); return false; };
  switch (nd.type) {
    case 'user': {
      const r = parseUserNetdev(formatQemuOpts(e.map((x) => [x.key, x.value])));
      if (!r.ok) return err('user', r.error);
      nd.user = r.config;
      for (const w of r.config.warnings) if (!w.startsWith('short-form')) diag(ctx, 'warning', 'user', opt, w);
      for (const f of r.config.hostfwd) bindHost(ctx, opt, f.proto, f.hostAddr, f.hostPort, `hostfwd=${f.raw}`);
      if (r.config.smb !== undefined) diag(ctx, 'note', 'smb', opt, `smb=${r.config.smb} needs smbd (Samba) installed on the host; QEMU refuses to start without it`);
      for (const f of r.config.hostfwd) {
        if (f.hostAddr === '' || f.hostAddr === '0.0.0.0') {
          diag(ctx, 'note', 'hostfwd-any', opt, `hostfwd=${f.raw} listens on all host interfaces, so other machines can reach guest port ${f.guestPort}`, `bind it to loopback: ${f.proto}:127.0.0.1:${f.hostPort}-${f.guest}:${f.guestPort}`);
        }
      }
      return true;
    }
    case 'tap': {
      const given = (k: string) => has(e, k);
      if (given('fd')) {
        const bad = ['ifname', 'script', 'downscript', 'vnet_hdr', 'helper', 'queues', 'fds', 'vhostfds'].filter(given);
        if (bad.length) return err('tap-fd', `ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd= (got ${bad.map((b) => b + '=').join(', ')})`, 'fd= hands QEMU an interface that is already set up: drop the other options, or drop fd= and let QEMU open the interface');
      } else if (given('fds')) {
        const bad = ['ifname', 'script', 'downscript', 'vnet_hdr', 'helper', 'queues', 'vhostfd'].filter(given);
        if (bad.length) return err('tap-fd', `ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, and vhostfd= are invalid with fds= (got ${bad.map((b) => b + '=').join(', ')})`, 'drop them, or drop fds=');
        const vfds = get(e, 'vhostfds');
        if (vfds && vfds.split(':').length !== get(e, 'fds')!.split(':').length) return err('tap-fd', 'The number of fds passed does not match the number of vhostfds passed', 'give as many vhostfds as fds');
      } else if (given('helper')) {
        const bad = ['ifname', 'script', 'downscript', 'vnet_hdr', 'queues', 'fds', 'vhostfds'].filter(given);
        if (bad.length) return err('tap-helper', `ifname=, script=, downscript=, vnet_hdr=, queues=, and vhostfds= are invalid with helper= (got ${bad.map((b) => b + '=').join(', ')})`, 'the helper creates and configures the interface itself: drop those options, or drop helper=');
      } else {
        if (given('vhostfds')) return err('tap-fd', "vhostfds= is invalid if fds= wasn't specified", 'use vhostfd= with a single queue, or pass fds= too');
        if (!given('script')) diag(ctx, 'note', 'tap-script', opt, "no script= given: QEMU runs /etc/qemu-ifup with the interface name (and /etc/qemu-ifdown at exit)", "give script=no if the interface is already configured");
        if (given('br')) diag(ctx, 'warning', 'tap-br', opt, 'br= is only used together with helper=; without it the interface is not added to any bridge', 'use -netdev bridge,br=BRIDGE, or add helper=');
      }
      const vhost = get(e, 'vhost');
      if (vhost !== undefined && parseBool(vhost) === false && (given('vhostfd') || given('vhostfds'))) {
        return err('tap-vhost', 'vhostfd=/vhostfds= is not valid without vhost', 'set vhost=on or drop vhostfd=');
      }
      if (given('vhostforce')) diag(ctx, 'warning', 'deprecated', opt, 'vhostforce= is deprecated', 'drop it; vhost=on is enough');
      return true;
    }
    case 'socket': {
      const modes = ['fd', 'listen', 'connect', 'mcast', 'udp'].filter((k) => has(e, k));
      if (modes.length !== 1) {
        return err('socket-mode', `exactly one of listen=, connect=, mcast= or udp= is required${modes.length ? ` (got ${modes.map((m) => m + '=').join(' and ')})` : ''}`,
          'listen=:PORT on one VM and connect=127.0.0.1:PORT on the other, or mcast=230.0.0.1:PORT on all of them');
      }
      const mode = modes[0];
      if (has(e, 'localaddr') && mode !== 'mcast' && mode !== 'udp') return err('socket-localaddr', 'localaddr= is only valid with mcast= or udp=', 'drop localaddr=');
      if (mode === 'udp' && !has(e, 'localaddr')) return err('socket-localaddr', 'localaddr= is mandatory with udp=', 'add localaddr=HOST:PORT for the local end');
      let ok = true;
      if (mode !== 'fd') {
        const hp = checkHostPort(ctx, opt, mode, get(e, mode)!);
        if (!hp) ok = false;
        else if (mode === 'mcast') {
          const a = inetAton(hp.host);
          if (a === undefined || a >>> 28 !== 0xe) {
            return err('socket-mcast', `specified mcastaddr ${hp.host} does not contain a multicast address`, 'use a group in 224.0.0.0/4, e.g. mcast=230.0.0.1:1234');
          }
        } else if (mode === 'listen') bindHost(ctx, opt, 'tcp', hp.host, hp.port, `listen=${get(e, mode)}`);
        if (hp && mode === 'listen' && (hp.host === '' || hp.host === '0.0.0.0')) {
          diag(ctx, 'note', 'listen-any', opt, `listen=${get(e, mode)} accepts connections on all host interfaces`, 'bind to 127.0.0.1 when the peers run on this host');
        }
      }
      if (mode === 'udp' && ok) {
        const la = checkHostPort(ctx, opt, 'localaddr', get(e, 'localaddr')!);
        if (!la) ok = false;
        else bindHost(ctx, opt, 'udp', la.host, la.port, `localaddr=${get(e, 'localaddr')}`);
      }
      if (mode === 'mcast' && has(e, 'localaddr')) {
        const la = get(e, 'localaddr')!;
        if (inetAton(la) === undefined) return err('bad-address', `localaddr: can't parse '${la}' as an IPv4 address`, 'with mcast=, localaddr= is the address of the interface to send from, without a port');
      }
      return ok;
    }
    case 'stream':
    case 'dgram':
      return checkSocketAddressBackend(ctx, opt, nd);
    case 'hubport': {
      const hubid = parseCInt(get(e, 'hubid') ?? '');
      if (!has(e, 'hubid')) return err('missing-option', "Parameter 'hubid' is missing", 'add hubid=N');
      nd.hubid = hubid;
      const link = get(e, 'netdev');
      if (link !== undefined) {
        const peer = ctx.netdevs.find((n) => n.id === link);
        if (!peer) return err('missing-netdev', `netdev '${link}' not found`, `define -netdev ...,id=${link} before this hubport`);
        // QEMU aborts (assertion !peer->peer) when a netdev gets a second peer this way.
        if (ctx.netdevs.some((n) => n.link === link) || peer.type === 'hubport') return err('netdev-in-use', `netdev '${link}' already has a peer; QEMU would abort`, 'wire each backend to exactly one hubport');
        nd.link = link;
      }
      return true;
    }
    case 'vhost-user': {
      const c = get(e, 'chardev');
      if (c === undefined) return err('missing-option', "Parameter 'chardev' is missing", 'add chardev=ID of a -chardev socket,id=ID,path=...');
      if (!ctx.chardevs.has(c)) return err('missing-chardev', `chardev "${c}" not found`, `add -chardev socket,id=${c},path=/path/to/vhost-user.sock`);
      return true;
    }
    case 'vhost-vdpa':
      if (!has(e, 'vhostdev') && !has(e, 'vhostfd')) return err('missing-option', 'vhost-vdpa needs vhostdev= or vhostfd=', 'add vhostdev=/dev/vhost-vdpa-0');
      if (has(e, 'vhostdev') && has(e, 'vhostfd')) return err('vdpa', 'vhostdev= and vhostfd= are mutually exclusive', 'give only one of them');
      return true;
    case 'l2tpv3':
      for (const k of ['src', 'dst', 'txsession']) if (!has(e, k)) return err('missing-option', `Parameter '${k}' is missing`, `l2tpv3 needs src=, dst= and txsession=`);
      if (parseBool(get(e, 'udp') ?? 'off') && (!has(e, 'srcport') || !has(e, 'dstport'))) return err('missing-option', 'l2tpv3 with udp=on needs srcport= and dstport=');
      return true;
    default:
      return true;
  }
}

const SOCKADDR_KEYS: Record<string, string[]> = {
  inet: ['host', 'port', 'numeric', 'to', 'ipv4', 'ipv6', 'keep-alive', 'mptcp'],
  unix: ['path', 'abstract', 'tight'],
  fd: ['str'],
};

/** stream/dgram take nested socket addresses (addr.*, local.*, remote.*), read by keyval. */
function checkSocketAddressBackend(ctx: Ctx, opt: string, nd: Netdev): boolean {
  const groups = nd.type === 'stream' ? ['addr'] : ['local', 'remote'];
  const top = nd.type === 'stream' ? ['server'] : [];
  const addrs: Record<string, Record<string, string>> = {};
  for (const e of nd.entries) {
    const dot = e.key.indexOf('.');
    const g = dot < 0 ? e.key : e.key.slice(0, dot);
    if (dot < 0 && top.includes(e.key)) {
      if (parseBool(e.value) === undefined) { diag(ctx, 'error', 'bad-value', opt, `Parameter '${e.key}' expects 'on' or 'off'`); return false; }
      continue;
    }
    if (!groups.includes(g) || dot < 0) {
      diag(ctx, 'error', 'unknown-option', opt, `Parameter '${e.key}' is unexpected`,
        nd.type === 'stream' ? 'stream takes server=on|off and addr.type=inet,addr.host=H,addr.port=P or addr.type=unix,addr.path=PATH' : 'dgram takes local.* and remote.* addresses (type=inet with host/port, type=unix with path)');
      return false;
    }
    (addrs[g] ??= {})[e.key.slice(dot + 1)] = e.value;
  }
  const checkAddr = (g: string): boolean => {
    const a = addrs[g];
    const t = a.type;
    if (t === undefined) { diag(ctx, 'error', 'missing-option', opt, `Parameter '${g}.type' is missing`, `add ${g}.type=inet or ${g}.type=unix`); return false; }
    const keys = SOCKADDR_KEYS[t];
    if (!keys) { diag(ctx, 'error', 'bad-value', opt, `Parameter '${g}.type' does not accept value '${t}'`, 'use inet, unix or fd'); return false; }
    for (const k of Object.keys(a)) {
      if (k !== 'type' && !keys.includes(k)) { diag(ctx, 'error', 'unknown-option', opt, `Parameter '${g}.${k}' is unexpected`, `${g}.type=${t} takes ${keys.map((x) => `${g}.${x}`).join(', ')}`); return false; }
    }
    const need = t === 'inet' ? ['host', 'port'] : t === 'unix' ? ['path'] : ['str'];
    for (const k of need) if (a[k] === undefined) { diag(ctx, 'error', 'missing-option', opt, `Parameter '${g}.${k}' is missing`); return false; }
    if (t === 'inet' && nd.type === 'dgram' && !/^\d+$/.test(a.port)) {
      diag(ctx, 'error', 'bad-port', opt, `${g}.port: port number '${a.port}' is invalid`, 'use a numeric UDP port');
      return false;
    }
    if (t === 'inet') {
      const p = parseCInt(a.port);
      if (p !== undefined && (p < 0 || p > 65535)) { diag(ctx, 'error', 'bad-port', opt, `${g}.port: port ${a.port} is outside 0..65535`); return false; }
      if (p === undefined && !/^[a-z][a-z0-9-]*$/i.test(a.port)) { diag(ctx, 'error', 'bad-port', opt, `${g}.port: '${a.port}' is neither a port number nor a service name`); return false; }
    }
    return true;
  };
  if (nd.type === 'stream') {
    if (!addrs.addr) { diag(ctx, 'error', 'missing-option', opt, "Parameter 'addr' is missing", 'add addr.type=inet,addr.host=127.0.0.1,addr.port=PORT or addr.type=unix,addr.path=PATH'); return false; }
    if (!checkAddr('addr')) return false;
    const server = parseBool(get(nd.entries, 'server') ?? 'off');
    if (server && addrs.addr.type === 'inet') bindHost(ctx, opt, 'tcp', addrs.addr.host, parseCInt(addrs.addr.port) ?? -1, `addr.port=${addrs.addr.port}`);
    if (server && addrs.addr.type === 'inet' && (addrs.addr.host === '' || addrs.addr.host === '0.0.0.0')) {
      diag(ctx, 'note', 'listen-any', opt, 'the stream server accepts connections on all host interfaces', 'set addr.host=127.0.0.1 when the peers run on this host');
    }
    return true;
  }
  // A multicast remote makes local= optional (QEMU joins the group itself).
  if (!addrs.local && addrs.remote?.type === 'inet' && ((inetAton(addrs.remote.host ?? '') ?? 0) >>> 28) === 0xe) return checkAddr('remote');
  if (!addrs.local) { diag(ctx, 'error', 'missing-option', opt, 'dgram requires local= parameter', 'add local.type=inet,local.host=127.0.0.1,local.port=PORT (or local.type=unix,local.path=PATH)'); return false; }
  if (!checkAddr('local')) return false;
  if (addrs.local.type === 'fd') {
    if (addrs.remote) { diag(ctx, 'error', 'dgram', opt, 'type=fd requires local parameter only', 'drop remote.*'); return false; }
    return true;
  }
  if (!addrs.remote) { diag(ctx, 'error', 'missing-option', opt, 'type=inet or type=unix requires remote parameter', `add remote.type=${addrs.local.type} with the peer's address`); return false; }
  if (!checkAddr('remote')) return false;
  if (addrs.local.type === 'inet') bindHost(ctx, opt, 'udp', addrs.local.host, parseCInt(addrs.local.port) ?? -1, `local.port=${addrs.local.port}`);
  if (addrs.remote.type !== addrs.local.type) { diag(ctx, 'error', 'dgram', opt, `remote and local types must be the same (local.type=${addrs.local.type}, remote.type=${addrs.remote.type})`, 'use the same type for both ends'); return false; }
  return true;
}

function checkId(ctx: Ctx, opt: string, id: string | undefined, required: boolean, kind: string): boolean {
  if (id === undefined) {
    if (required) { diag(ctx, 'error', 'missing-id', opt, "Parameter 'id' is missing", `add id=NAME; devices refer to the ${kind} by it`); return false; }
    return true;
  }
  if (!ID_RE.test(id)) {
    diag(ctx, 'error', 'bad-id', opt, "Parameter 'id' expects an identifier", "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
    return false;
  }
  return true;
}

function splitTypeId(parsed: OptEntry[], implied: string): { type?: string; id?: string; rest: OptEntry[] } {
  let type: string | undefined, id: string | undefined;
  const rest: OptEntry[] = [];
  for (const e of parsed) {
    if (e.key === implied) type = e.value;
    else if (e.key === 'id') id ??= e.value; // QemuOpts takes the first id= and ignores the rest
    else rest.push(e);
  }
  return { type, id, rest };
}

function unknownBackend(ctx: Ctx, opt: string, type: string | undefined, where: string, allowed: string[]): void {
  if (type === undefined) diag(ctx, 'error', 'missing-type', opt, "Parameter 'type' is missing", `start the option with the backend type: ${allowed.join(', ')}`);
  else diag(ctx, 'error', 'unknown-backend', opt, `Parameter 'type' does not accept value '${type}'`, `${where} backends: ${allowed.join(', ')}`);
}

function nextId(ctx: Ctx, base: string): string {
  for (let i = 0; ; i++) {
    const id = `${base}${i}`;
    if (!ctx.netdevs.some((n) => n.id === id)) return id;
  }
}

export interface AnalyzeOptions {
  /** Override machine type (otherwise from -M/-machine, default pc). */
  machine?: string;
}

export function analyze(argv: string[], options: AnalyzeOptions = {}): Analysis {
  const tokens = tokenize(argv);
  let machineType = options.machine;
  let nodefaults = false;
  let usb = false;
  const chardevs = new Set<string>();
  const deviceIds = new Set<string>();
  const diags: Diagnostic[] = [];
  for (const t of tokens) {
    if (t.kind === 'other' && t.name) {
      const v = t.args[1] ?? '';
      if ((t.name === 'M' || t.name === 'machine') && !options.machine) {
        const p = parseQemuOpts(v, { impliedKey: 'type' }).entries;
        machineType = get(p, 'type') ?? machineType;
        if (parseBool(get(p, 'usb') ?? 'off')) usb = true;
      } else if (t.name === 'nodefaults') nodefaults = true;
      else if (t.name === 'usb') usb = true;
      else if (t.name === 'chardev') {
        const id = get(parseQemuOpts(v, { impliedKey: 'backend' }).entries, 'id');
        if (id) chardevs.add(id);
      }
    }
    if (t.kind === 'net' && t.name === 'device') {
      const p = parseQemuOpts(t.value, { impliedKey: 'driver' }).entries;
      const drv = get(p, 'driver') ?? '';
      if (USB_CONTROLLERS.test(drv)) usb = true;
      const id = p.find((e) => e.key === 'id')?.value;
      if (id) {
        if (deviceIds.has(id)) diags.push({ severity: 'error', code: 'duplicate-id', option: optionText(t), message: `Duplicate ID '${id}' for device`, hint: 'give each -device its own id=' });
        deviceIds.add(id);
      }
    }
  }
  const machine = machineInfo(machineType);
  const ctx: Ctx = { diags, netdevs: [], nics: [], chardevs, deviceIds, machine, usb, binds: [] };
  const hostdevs: Hostdev[] = [];
  let noneNet = false;
  let sawNet = false;
  let help: string | undefined;

  for (const t of tokens) {
    if (t.kind === 'missing') {
      diag(ctx, 'error', 'missing-argument', t.written, `option '${t.written}' requires an argument`, `give it one, e.g. ${t.written} user,id=n0`);
      continue;
    }
    if (t.kind === 'other') {
      if (t.dash && !t.positional) {
        diag(ctx, 'error', 'fancy-dash', t.args.join(' '), `'${t.args[0]}' begins with '${t.dash}' (U+${t.dash.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}), not '-'; QEMU reads it as a disk image name`, `type it as -${t.args[0].slice(1)}`);
      } else if (t.positional && /^[a-z_][\w.-]*=/.test(t.args[0]) && /^(netdev|model|mac|macaddr|id|vlan|hostfwd|guestfwd|script|downscript|ifname|br|addr|vectors|net|host|dns|smb|tftp)=/.test(t.args[0])) {
        diag(ctx, 'error', 'stray-argument', t.args[0], `'${t.args[0]}' is not part of any option; QEMU reads it as a disk image name`, 'remove the space before it so it joins the previous option (e.g. "-net nic,netdev=nic0")');
      }
    }
  }

  // QEMU creates all -netdev backends first, then -nic, then -net; devices come later.
  const order: NetOptionName[] = ['netdev', 'nic', 'net'];
  const netToks = tokens.filter((t): t is Extract<Token, { kind: 'net' }> => t.kind === 'net');
  for (const t of netToks) {
    if (t.dash) {
      diag(ctx, 'error', 'fancy-dash', `${t.written} ${t.value}`, `'${t.written}' begins with '${t.dash}' (U+${t.dash.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}), not '-'; QEMU reads it and '${t.value}' as disk image names`, `type it as -${t.name}`);
    }
  }
  for (const phase of order) {
    for (const t of netToks.filter((x) => x.name === phase)) {
      if (t.name !== 'device') sawNet = true;
      const opt = optionText(t);
      if (phase === 'netdev') parseNetdevOption(ctx, t, opt);
      else if (phase === 'nic') {
        const r = parseNicOption(ctx, t, opt);
        if (r === 'none') noneNet = true;
        if (r === 'help') help = `Supported NIC models:\n${LEGACY_MODEL_LIST.join('\n')}`;
      } else {
        const r = parseNetOption(ctx, t, opt);
        if (r === 'none') noneNet = true;
        if (r === 'help') help = `Supported NIC models:\n${LEGACY_MODEL_LIST.join('\n')}`;
      }
    }
  }
  for (const t of netToks.filter((x) => x.name === 'device')) parseDeviceOption(ctx, t, optionText(t), hostdevs);
  help ??= ctx.help;

  const defaultNet = !sawNet && !nodefaults;
  if (defaultNet) {
    diag(ctx, 'note', 'default-net', undefined, `no network options: QEMU adds its default '-nic user,model=${machine.defaultNic}' (user-mode NAT, MAC ${QEMU_DEFAULT_MAC})`, 'say what you want explicitly, or -nic none for no network');
  }
  if (!help) checkTopology(ctx);
  return { tokens, machine, ...(machineType ? { machineType } : {}), nodefaults, netdevs: ctx.netdevs, nics: ctx.nics, hostdevs, noneNet, defaultNet, diagnostics: diags, ...(help ? { help } : {}) };
}

function addNetdev(ctx: Ctx, opt: string, nd: Netdev): boolean {
  if (ctx.netdevs.some((n) => n.id === nd.id)) {
    diag(ctx, 'error', 'duplicate-id', opt, `Duplicate ID '${nd.id}' for netdev`, 'give each -netdev its own id=');
    return false;
  }
  ctx.netdevs.push(nd);
  return true;
}

function parseNetdevOption(ctx: Ctx, t: Extract<Token, { kind: 'net' }>, opt: string): void {
  // stream and dgram are read with keyval, the others with QemuOpts.
  const first = parseQemuOpts(t.value, { impliedKey: 'type' });
  const type0 = get(first.entries, 'type');
  const keyval = type0 === 'stream' || type0 === 'dgram';
  const parsed = keyval && !first.json ? parseQemuOpts(t.value, { impliedKey: 'type', keyval: true }) : first;
  if (parsed.error) { diag(ctx, 'error', 'syntax', opt, parsed.error); return; }
  const { type, id, rest } = splitTypeId(parsed.entries, 'type');
  if (type === 'help' || type === '?') { ctx.help = `Available netdev backend types:\n${Object.keys(BACKENDS).join('\n')}`; return; }
  const spec = type !== undefined ? BACKENDS[type] : undefined;
  if (!spec) {
    if (type === 'nic') diag(ctx, 'error', 'unknown-backend', opt, "Parameter 'type' does not accept value 'nic'", "NICs are devices: use -device MODEL,netdev=ID (or -net nic with -net backends)");
    else unknownBackend(ctx, opt, type, '-netdev', Object.keys(BACKENDS));
    return;
  }
  if (!checkId(ctx, opt, id, true, 'netdev')) return;
  if (!spec.keyval && !checkEntries(ctx, opt, spec, rest, `-netdev ${type}`)) return;
  const nd: Netdev = { id: id!, type: type!, entries: rest, origin: '-netdev', source: opt, raw: t.value, pos: t.index, ...(parsed.json ? { json: true } : {}) };
  if (!checkBackend(ctx, opt, nd)) return;
  addNetdev(ctx, opt, nd);
}

function checkMacFor(ctx: Ctx, opt: string, key: string, v: string, loose: boolean, strictMulticast: boolean, devName?: string): string | undefined {
  const b = parseQemuMac(v, loose);
  if (!b) {
    if (devName) diag(ctx, 'error', 'bad-mac', opt, `Property '${devName}.mac' doesn't take value '${v}'`, 'write six two-digit hex bytes, e.g. mac=52:54:00:ab:cd:01');
    else diag(ctx, 'error', 'bad-mac', opt, `${key}: invalid syntax for ethernet address '${v}'`, `write six hex bytes separated by ':', e.g. ${key}=52:54:00:ab:cd:01`);
    return undefined;
  }
  if (b[0] & 1) {
    if (strictMulticast) diag(ctx, 'error', 'multicast-mac', opt, `NIC cannot have multicast MAC address (odd 1st byte): ${v}`, 'clear the lowest bit of the first byte; 52:54:00:xx:xx:xx is the usual QEMU range');
    else diag(ctx, 'warning', 'multicast-mac', opt, `MAC ${v} is a multicast address (odd 1st byte); QEMU accepts it on -device but the guest's traffic will be misdelivered`, 'clear the lowest bit of the first byte, e.g. 52:54:00:xx:xx:xx');
  }
  return macToString(b, 0);
}

function parseNicOption(ctx: Ctx, t: Extract<Token, { kind: 'net' }>, opt: string): 'none' | 'help' | void {
  const parsed = parseQemuOpts(t.value, { impliedKey: 'type' });
  if (parsed.error) { diag(ctx, 'error', 'syntax', opt, parsed.error); return; }
  const { type, id, rest } = splitTypeId(parsed.entries, 'type');
  if (type === 'none') return 'none';
  const model = get(rest, 'model');
  if (model === 'help' || model === '?') return 'help';
  const spec = type !== undefined ? BACKENDS[type] : undefined;
  const nicable = Object.values(BACKENDS).filter((b) => b.nic && !b.keyval).map((b) => b.name);
  if (!spec || spec.keyval) {
    if (spec?.keyval) diag(ctx, 'error', 'unknown-backend', opt, `-nic can't take the ${type} backend (its addr.* options need -netdev)`, `use -netdev ${type},id=ID,... with -device MODEL,netdev=ID`);
    else unknownBackend(ctx, opt, type, '-nic', [...nicable, 'none']);
    return;
  }
  if (!checkId(ctx, opt, id, false, 'netdev')) return;
  const backendEntries = rest.filter((e) => e.key !== 'model' && e.key !== 'mac');
  if (!checkEntries(ctx, opt, { name: spec.name, options: [...spec.options, { name: 'model', type: 'str', desc: '' }, { name: 'mac', type: 'str', desc: '' }] }, rest, `-nic ${type} (plus model= and mac=)`)) return;
  let mac: string | undefined;
  const macv = get(rest, 'mac');
  if (macv !== undefined) { mac = checkMacFor(ctx, opt, 'mac', macv, true, true); if (!mac) return; }
  const m = checkLegacyModel(ctx, opt, model);
  if (m === undefined) return;
  if (!legacyNicRoom(ctx, opt)) return;
  const ndId = id ?? nextId(ctx, '__org.qemu.nic');
  const nd: Netdev = { id: ndId, type: type!, entries: backendEntries, origin: '-nic', source: opt, pos: t.index, ...(id ? {} : { autoId: true }) };
  if (!checkBackend(ctx, opt, nd)) return;
  if (!addNetdev(ctx, opt, nd)) return;
  ctx.nics.push({ name: `${m}.${ctx.nics.filter((n) => n.model === m).length}`, model: m, ...(model && model !== m ? { writtenModel: model } : {}), ...(mac ? { mac } : {}), props: [], netdev: ndId, origin: '-nic', source: opt, pos: t.index });
}

/** QEMU keeps -nic and -net nic NICs in a fixed table (MAX_NICS). */
export const MAX_LEGACY_NICS = 8;

function legacyNicRoom(ctx: Ctx, opt: string): boolean {
  if (ctx.nics.filter((n) => n.origin !== '-device').length < MAX_LEGACY_NICS) return true;
  diag(ctx, 'error', 'too-many-nics', opt, `no more on-board/default NIC slots available: -nic and -net nic can create at most ${MAX_LEGACY_NICS} NICs`, 'add the others with -netdev TYPE,id=ID plus -device MODEL,netdev=ID');
  return false;
}

function checkLegacyModel(ctx: Ctx, opt: string, model: string | undefined): string | undefined {
  if (model === undefined) return ctx.machine.defaultNic;
  const m = legacyModelName(model);
  if (!m) {
    const dev = findNicModel(model);
    const hint = dev && !dev.legacyModel
      ? `${model} can only be added with -device`
      : `valid models: ${LEGACY_MODEL_LIST.join(', ')}`;
    diag(ctx, 'error', 'unknown-model', opt, `Unsupported NIC model: ${model}`, hint);
    return undefined;
  }
  return m;
}

function parseNetOption(ctx: Ctx, t: Extract<Token, { kind: 'net' }>, opt: string): 'none' | 'help' | void {
  const parsed = parseQemuOpts(t.value, { impliedKey: 'type' });
  if (parsed.error) { diag(ctx, 'error', 'syntax', opt, parsed.error); return; }
  const { type, id, rest } = splitTypeId(parsed.entries, 'type');
  if (type === 'none') return 'none';
  // vlan= is gone from QEMU, but we still read it so convert can map vlans to hubs.
  const vlanStr = get(rest, 'vlan');
  const vlan = vlanStr !== undefined ? parseCInt(vlanStr) : undefined;
  const hub = vlan ?? 0;
  if (type === 'nic') {
    const model = get(rest, 'model');
    if (model === 'help' || model === '?') return 'help';
    if (!checkEntries(ctx, opt, { name: 'nic', options: LEGACY_NIC_OPTIONS }, rest, '-net nic')) {
      if (!rest.some((e) => e.key === 'vlan') || rest.some((e) => !['vlan', ...LEGACY_NIC_OPTIONS.map((x) => x.name)].includes(e.key))) return;
    }
    if (!checkId(ctx, opt, id, false, 'nic')) return;
    let mac: string | undefined;
    const macv = get(rest, 'macaddr');
    if (macv !== undefined) { mac = checkMacFor(ctx, opt, 'macaddr', macv, true, true); if (!mac) return; }
    const m = checkLegacyModel(ctx, opt, model);
    if (m === undefined) return;
    const addr = get(rest, 'addr');
    if (addr !== undefined) {
      // -net nic reads addr= with pci_parse_devaddr: [[domain:]bus:]slot in hex, no function.
      const a = /^(?:(?:[0-9a-fA-F]{1,4}:)?[0-9a-fA-F]{1,2}:)?(?:0[xX])?[0-9a-fA-F]{1,2}$/.test(addr) ? parsePciAddr(addr.replace(/^.*:/, '')) : undefined;
      if (!a) {
        diag(ctx, 'error', 'bad-pci-addr', opt, `Invalid PCI device address ${addr} for device ${m}`, 'write the slot in hex, e.g. addr=08 (-net nic takes no function number; use -device for that)');
        return;
      }
    }
    const vectors = get(rest, 'vectors');
    const netdev = get(rest, 'netdev');
    if (netdev !== undefined) {
      const nd = ctx.netdevs.find((n) => n.id === netdev && n.origin === '-netdev');
      if (!nd) { diag(ctx, 'error', 'missing-netdev', opt, `netdev '${netdev}' not found`, `define it with -netdev TYPE,id=${netdev},...`); return; }
      if (ctx.nics.some((n) => n.netdev === netdev) || ctx.netdevs.some((n) => n.link === netdev) || nd.link !== undefined) {
        diag(ctx, 'error', 'netdev-in-use', opt, `netdev '${netdev}' is already in use`, 'each netdev has exactly one peer');
        return;
      }
    }
    if (!legacyNicRoom(ctx, opt)) return;
    const model0 = findNicModel(m)!;
    if (vectors !== undefined && !model0.virtio) {
      diag(ctx, 'warning', 'vectors-ignored', opt, `vectors=${vectors} only applies to virtio NICs; ${m} ignores it`, 'drop vectors= or use model=virtio-net-pci');
    }
    ctx.nics.push({
      name: id ?? `${m}.${ctx.nics.filter((n) => n.model === m).length}`,
      ...(id ? { id } : {}),
      model: m, ...(model && model !== m ? { writtenModel: model } : {}),
      ...(mac ? { mac } : {}), ...(addr !== undefined ? { addr } : {}), ...(vectors !== undefined ? { vectors } : {}),
      props: [], ...(netdev !== undefined ? { netdev } : { hub }), origin: '-net', source: opt, pos: t.index,
    });
    return;
  }
  const spec = type !== undefined ? BACKENDS[type] : undefined;
  const legacy = Object.values(BACKENDS).filter((b) => b.legacy).map((b) => b.name);
  if (!spec || !spec.legacy) {
    if (spec) diag(ctx, 'error', 'legacy-backend', opt, `network backend '${type}' is only supported with -netdev${spec.keyval ? '' : '/-nic'}`, `use -netdev ${type},id=ID,... with -device MODEL,netdev=ID`);
    else unknownBackend(ctx, opt, type, '-net', ['nic', ...legacy, 'none']);
    return;
  }
  const backendEntries = rest.filter((e) => e.key !== 'vlan');
  const vlanOk = checkEntries(ctx, opt, spec, rest, `-net ${type}`);
  if (!vlanOk && backendEntries.length !== rest.length) {
    // Only vlan= was wrong: keep the backend so explain/convert can still work with it.
    if (!checkEntries({ ...ctx, diags: [] }, opt, spec, backendEntries, '')) return;
  } else if (!vlanOk) return;
  if (!checkId(ctx, opt, id, false, 'netdev')) return;
  const nd: Netdev = { id: id ?? nextId(ctx, `${type}.`), type: type!, entries: backendEntries, origin: '-net', source: opt, hub, pos: t.index, ...(id ? {} : { autoId: true }) };
  if (!checkBackend(ctx, opt, nd)) return;
  addNetdev(ctx, opt, nd);
}

function parseDeviceOption(ctx: Ctx, t: Extract<Token, { kind: 'net' }>, opt: string, hostdevs: Hostdev[]): void {
  const parsed = parseQemuOpts(t.value, { impliedKey: 'driver' });
  if (parsed.error) { diag(ctx, 'error', 'syntax', opt, parsed.error); return; }
  const { type: driver, id, rest } = splitTypeId(parsed.entries, 'driver');
  if (driver === 'vfio-pci') {
    hostdevs.push({ driver, host: get(rest, 'host'), sysfsdev: get(rest, 'sysfsdev'), ...(id ? { id } : {}), addr: get(rest, 'addr'), props: rest, source: opt });
    if (!has(rest, 'host') && !has(rest, 'sysfsdev')) diag(ctx, 'error', 'vfio', opt, 'vfio-pci needs host= or sysfsdev=', 'add host=BUS:SLOT.FN of the host device, e.g. host=03:00.3');
    else if (has(rest, 'host') && !/^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/.test(get(rest, 'host')!)) {
      diag(ctx, 'error', 'vfio', opt, `host=${get(rest, 'host')} is not a PCI address`, 'write [DOMAIN:]BUS:SLOT.FN, e.g. host=0000:03:00.3 (see lspci -D)');
    } else diag(ctx, 'note', 'vfio', opt, 'vfio-pci hands a host PCI device to the guest: it must be bound to vfio-pci on the host and needs an IOMMU');
    return;
  }
  const model = driver !== undefined ? findNicModel(driver) : undefined;
  if (!model) {
    if (driver && /net|nic|e1000|rtl|virtio-net/i.test(driver) && !/(^|-)(blk|scsi|serial|balloon|rng|gpu|vga|9p|fs)/.test(driver)) {
      const near = NIC_MODELS.filter((m) => m.name.includes(driver.replace(/-.*$/, '')) || driver.includes(m.name)).map((m) => m.name);
      diag(ctx, 'error', 'unknown-model', opt, `'${driver}' is not a valid device model name`, `NIC models: ${(near.length ? near : NIC_MODELS.map((m) => m.name)).join(', ')}`);
    }
    return; // not a network device
  }
  if (id !== undefined && !ID_RE.test(id)) { diag(ctx, 'error', 'bad-id', opt, "Parameter 'id' expects an identifier", "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."); return; }
  const props = deviceProperties(model.name);
  for (const e of rest) {
    if (e.key === 'bus') continue;
    if (!props.includes(e.key)) {
      diag(ctx, 'error', 'unknown-option', opt, `Property '${driver}.${e.key}' not found`, `${driver} properties include: ${props.filter((p) => !p.startsWith('x-')).slice(0, 24).join(', ')}${props.length > 24 ? ', ...' : ''}`);
      return;
    }
  }
  let mac: string | undefined;
  const macv = get(rest, 'mac');
  if (macv !== undefined) { mac = checkMacFor(ctx, opt, 'mac', macv, false, false, driver); if (!mac) return; }
  const vectors = get(rest, 'vectors');
  if (vectors !== undefined && parseCInt(vectors) === undefined) { diag(ctx, 'error', 'bad-value', opt, "Parameter 'vectors' expects integer"); return; }
  const addr = get(rest, 'addr');
  if (addr !== undefined && !parsePciAddr(addr)) {
    diag(ctx, 'error', 'bad-pci-addr', opt, `Property '${driver}.addr' doesn't take value '${addr}'`, 'write slot[.function] in hex with slot 00..1f and function 0..7, e.g. addr=0x8 or addr=08.0');
    return;
  }
  const bus = get(rest, 'bus');
  if (model.bus === 'usb-bus' && !ctx.usb && bus === undefined) {
    diag(ctx, 'error', 'no-bus', opt, `No 'usb-bus' bus found for device '${driver}'`, 'add a USB controller first, e.g. -device qemu-xhci');
    return;
  }
  if (model.bus === 'virtio-bus' && ctx.machine.family !== 'microvm' && bus === undefined) {
    diag(ctx, 'error', 'no-bus', opt, `No 'virtio-bus' bus found for device '${driver}'`, 'on pc/q35 use virtio-net-pci');
    return;
  }
  if (bus !== undefined && model.bus === 'PCI' && bus !== ctx.machine.pciBus && !ctx.deviceIds.has(bus)) {
    diag(ctx, 'error', 'no-bus', opt, `Bus '${bus}' not found`, `this machine's root PCI bus is '${ctx.machine.pciBus}'; other buses come from -device ...,id=NAME bridges or root ports`);
    return;
  }
  const netdev = get(rest, 'netdev');
  if (netdev !== undefined && !model.netdev) { diag(ctx, 'error', 'unknown-option', opt, `Property '${driver}.netdev' not found`); return; }
  if (netdev !== undefined) {
    const nd = ctx.netdevs.find((n) => n.id === netdev);
    if (!nd) {
      diag(ctx, 'error', 'missing-netdev', opt, `Property '${driver}.netdev' can't find value '${netdev}'`,
        ctx.netdevs.length ? `define -netdev TYPE,id=${netdev},... or use one of: ${ctx.netdevs.filter((n) => !n.autoId).map((n) => n.id).join(', ') || '(none)'}` : `define it with -netdev TYPE,id=${netdev},...`);
      return;
    }
    if (ctx.nics.some((n) => n.netdev === netdev) || ctx.netdevs.some((n) => n.link === netdev) || nd.link !== undefined || nd.origin === '-net') {
      diag(ctx, 'error', 'netdev-in-use', opt, `Property '${driver}.netdev' can't take value '${netdev}', it's in use`, 'each netdev has exactly one peer: give this device its own -netdev, or join them with hubport netdevs');
      return;
    }
    if (nd.type === 'vhost-user' && !model.virtio) {
      diag(ctx, 'error', 'vhost-user-model', opt, `vhost-user requires frontend driver virtio-net-*, not ${driver}`, 'use -device virtio-net-pci');
      return;
    }
  }
  const others = rest.filter((e) => !['mac', 'addr', 'bus', 'netdev', 'vectors'].includes(e.key));
  ctx.nics.push({
    name: id ?? `${model.name}.${ctx.nics.filter((n) => n.model === model.name).length}`,
    ...(id ? { id } : {}), model: model.name, ...(driver !== model.name ? { writtenModel: driver } : {}),
    ...(mac ? { mac } : {}), ...(addr !== undefined ? { addr } : {}), ...(bus !== undefined ? { bus } : {}),
    ...(vectors !== undefined ? { vectors } : {}), props: others, ...(netdev !== undefined ? { netdev } : {}),
    origin: '-device', source: opt, raw: t.value, pos: t.index, ...(parsed.json ? { json: true } : {}),
  });
}

/** Where a NIC's traffic ends up: the backends it reaches directly or through a hub. */
export function reach(a: Pick<Analysis, 'netdevs' | 'nics'>, nic: Nic): { hub?: number; backends: Netdev[]; others: Nic[] } {
  let hub = nic.hub;
  if (nic.netdev !== undefined) {
    const nd = a.netdevs.find((n) => n.id === nic.netdev);
    if (!nd) return { backends: [], others: [] };
    if (nd.type !== 'hubport') return { backends: [nd], others: [] };
    hub = nd.hubid;
  }
  if (hub === undefined) return { backends: [], others: [] };
  const m = hubMembers(a, hub);
  return { hub, backends: m.backends, others: m.nics.filter((n) => n !== nic) };
}

export function hubMembers(a: Pick<Analysis, 'netdevs' | 'nics'>, hub: number): { nics: Nic[]; backends: Netdev[] } {
  const ports = new Set(a.netdevs.filter((n) => n.type === 'hubport' && n.hubid === hub && n.link === undefined).map((n) => n.id));
  const nics = a.nics.filter((n) => (n.hub === hub && n.netdev === undefined) || (n.netdev !== undefined && ports.has(n.netdev)));
  const backends = a.netdevs.filter((n) => (n.origin === '-net' && n.hub === hub) ||
    a.netdevs.some((p) => p.type === 'hubport' && p.hubid === hub && p.link === n.id));
  return { nics, backends };
}

export function hubIds(a: Pick<Analysis, 'netdevs' | 'nics'>): number[] {
  const s = new Set<number>();
  for (const n of a.nics) if (n.hub !== undefined && n.netdev === undefined) s.add(n.hub);
  for (const n of a.netdevs) {
    if (n.origin === '-net' && n.hub !== undefined) s.add(n.hub);
    if (n.type === 'hubport' && n.hubid !== undefined) s.add(n.hubid);
  }
  return [...s].sort((x, y) => x - y);
}

const SHARED = new Set(['tap', 'bridge', 'socket', 'stream', 'dgram', 'vde', 'vhost-user', 'vhost-vdpa', 'l2tpv3']);

function checkTopology(ctx: Ctx): void {
  const a = { netdevs: ctx.netdevs, nics: ctx.nics };
  // Peers of each -netdev: a device, a hubport's netdev=, or a NIC via -net nic,netdev=.
  for (const nd of ctx.netdevs) {
    if (nd.origin !== '-netdev' || nd.type === 'hubport') continue;
    const used = ctx.nics.some((n) => n.netdev === nd.id) || ctx.netdevs.some((n) => n.link === nd.id);
    if (!used) diag(ctx, 'warning', 'no-peer', nd.source, `netdev ${nd.id} has no peer`, `attach a NIC to it: -device ${ctx.machine.defaultNic},netdev=${nd.id}`);
  }
  for (const nd of ctx.netdevs) {
    if (nd.type === 'hubport' && nd.link === undefined && nd.origin === '-netdev' && !ctx.nics.some((n) => n.netdev === nd.id)) {
      diag(ctx, 'warning', 'no-peer', nd.source, `netdev ${nd.id} has no peer`, `attach a NIC to it: -device ${ctx.machine.defaultNic},netdev=${nd.id}`);
    }
  }
  for (const n of ctx.nics) {
    if (n.origin === '-device' && n.netdev === undefined) {
      diag(ctx, 'warning', 'no-peer', n.source, `nic ${n.name} has no peer`, 'give it netdev=ID of a -netdev backend; without one the guest sees a NIC with no cable');
    }
  }
  for (const hub of hubIds(a)) {
    const m = hubMembers(a, hub);
    const legacy = ctx.nics.some((n) => n.hub === hub) || ctx.netdevs.some((n) => n.origin === '-net' && n.hub === hub);
    const label = legacy && hub !== 0 ? `hub ${hub} (vlan ${hub})` : `hub ${hub}`;
    if (m.nics.length && !m.backends.length) {
      diag(ctx, 'warning', 'hub-no-host', m.nics[0].source, `${label} is not connected to host network`, legacy
        ? 'add a backend for it, e.g. -net user or -net tap,... (or pair the NIC with -netdev via -net nic,netdev=ID)'
        : `add -netdev TYPE,id=X -netdev hubport,id=P,hubid=${hub},netdev=X`);
    }
    if (m.backends.length && !m.nics.length) {
      diag(ctx, 'warning', 'hub-no-nic', m.backends[0].source, `${label} with no nics`, legacy ? 'add -net nic[,model=...] so the guest has a NIC on it' : `attach a device to a hubport with hubid=${hub}`);
    }
  }
  // PCI slots: collisions with each other and with the machine's own devices.
  const used = new Map<string, Nic>();
  for (const n of ctx.nics) {
    if (n.addr === undefined || (n.bus !== undefined && n.bus !== ctx.machine.pciBus)) continue;
    const p = parsePciAddr(n.addr);
    if (!p) continue;
    const key = pciKey(p);
    if (ctx.machine.reserved.includes(key)) {
      const sev: Severity = 'error';
      diag(ctx, sev, 'pci-conflict', n.source, `PCI: slot ${p.slot} function ${p.fn} not available for ${n.model}, in use by the ${ctx.machine.family} machine`, 'pick a free slot, e.g. addr=0x8');
    } else if (used.has(key)) {
      diag(ctx, 'error', 'pci-conflict', n.source, `PCI: slot ${p.slot} function ${p.fn} not available for ${n.model}, in use by ${used.get(key)!.name}`, 'give each NIC its own addr=');
    } else used.set(key, n);
  }
  // MAC addresses: duplicates within this VM, and the default MAC shared by every VM.
  const macs = new Map<string, Nic>();
  for (const n of ctx.nics) {
    if (!n.mac) continue;
    const prev = macs.get(n.mac);
    if (prev) diag(ctx, 'warning', 'duplicate-mac', n.source, `MAC ${n.mac} is also used by ${prev.name}; the two NICs will confuse switches and DHCP`, 'give each NIC its own mac=');
    else macs.set(n.mac, n);
  }
  for (const n of ctx.nics) {
    const r = reach(a, n);
    const shared = r.backends.some((b) => SHARED.has(b.type));
    if (n.mac === QEMU_DEFAULT_MAC) {
      diag(ctx, 'warning', 'default-mac', n.source, `${n.name} uses QEMU's default MAC ${QEMU_DEFAULT_MAC}: two VMs started this way collide on a shared network`, 'pick a unique MAC, e.g. mac=52:54:00:xx:xx:xx with random xx');
    } else if (!n.mac && shared) {
      diag(ctx, 'warning', 'default-mac', n.source, `${n.name} has no MAC, so QEMU gives it ${QEMU_DEFAULT_MAC} (or the next free one); two VMs started this way collide on a shared network`, `set ${n.origin === '-net' ? 'macaddr' : 'mac'}=52:54:00:xx:xx:xx with a unique value per VM`);
    }
  }
}

export function errorCount(a: Analysis): number {
  return a.diagnostics.filter((d) => d.severity === 'error').length;
}
