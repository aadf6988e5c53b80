// Parses and validates a `-netdev user` option string into a typed config.
// The checks and their order follow QEMU 7.2's net_init_slirp(), so a string
// accepted here is one QEMU accepts (save for host-side facts such as whether
// smbd is installed), and the error names the option the way QEMU does.
import type { ForwardRule } from '../common/types.ts';
import { inetAton, ipv4ToString, ipv6SameNet, ipv6ToString, parseBool, parseCInt, parseIpv6, parseQemuOpts } from './opts.ts';

/** One `hostfwd=` rule: host port → guest port. */
export interface HostFwd extends ForwardRule {
  /** The rule as written. */
  raw: string;
}

/** Where a `guestfwd=` connection from the guest ends up on the host. */
export type GuestFwdTarget =
  | { kind: 'cmd'; command: string }
  | { kind: 'tcp'; host: string; port: string; options: string[] }
  | { kind: 'unix'; path: string; options: string[] }
  /** Any other chardev spec (stdio, file:..., udp:..., pipe:...). */
  | { kind: 'chardev'; spec: string };

/** One `guestfwd=` rule: guest connects to server:port, which is relayed to target. */
export interface GuestFwd {
  proto: 'tcp';
  /** Virtual address inside the user network; '' means any. */
  server: string;
  port: number;
  target: GuestFwdTarget;
  raw: string;
}

/**
 * A validated user-mode network. Defaults are filled in (QEMU's 10.0.2.0/24
 * with host .2, DNS .3, first DHCP address .15; IPv6 fec0::/64).
 */
export interface UserNetdevConfig {
  /** Only when the string carried an id= (it normally does not). */
  id?: string;
  ipv4: boolean;
  ipv6: boolean;
  /** Network address, masked (e.g. '10.0.2.0'). */
  net: string;
  netmask: string;
  /** Prefix length of netmask, or null when the mask is not contiguous. */
  prefixLength: number | null;
  /** The gateway/host address the guest sees (default net+.2). */
  host: string;
  /** Built-in DNS forwarder address (default net+.3). */
  dns: string;
  /** First address handed out by DHCP (default net+.15). */
  dhcpstart: string;
  /** restrict=on: the guest is isolated from the host and the outside. */
  restrict: boolean;
  hostname?: string;
  domainname?: string;
  dnssearch: string[];
  /** Directory served over TFTP. */
  tftp?: string;
  tftpServerName?: string;
  /** BOOTP file name offered by DHCP. */
  bootfile?: string;
  /** Directory exported over SMB (needs smbd on the host). */
  smb?: string;
  smbserver?: string;
  ipv6Prefix: string;
  ipv6PrefixLength: number;
  ipv6Host: string;
  ipv6Dns: string;
  hostfwd: HostFwd[];
  guestfwd: GuestFwd[];
  /** Non-fatal remarks (deprecated syntax, legacy options). */
  warnings: string[];
}

export type ParseUserResult = { ok: true; config: UserNetdevConfig } | { ok: false; error: string };

/** Every option QEMU 7.2 accepts for -netdev user, besides id. */
export const USER_OPTIONS = [
  'hostname', 'restrict', 'ipv4', 'ipv6', 'ip', 'net', 'host', 'tftp', 'bootfile', 'dhcpstart', 'dns',
  'dnssearch', 'domainname', 'ipv6-prefix', 'ipv6-prefixlen', 'ipv6-host', 'ipv6-dns', 'ipv6-net',
  'smb', 'smbserver', 'hostfwd', 'guestfwd', 'tftp-server-name',
] as const;

const LIST_OPTIONS = new Set(['hostfwd', 'guestfwd', 'dnssearch']);
const BOOL_OPTIONS = new Set(['restrict', 'ipv4', 'ipv6']);

/** Split off text up to sep (get_str_sep); undefined when sep is missing. */
function splitSep(s: string, sep: string): [string, string] | undefined {
  const i = s.indexOf(sep);
  return i < 0 ? undefined : [s.slice(0, i), s.slice(i + 1)];
}

/** qemu_strtoi on a whole string: the entire text must be an integer. */
function strictInt(s: string): number | undefined {
  return parseCInt(s);
}

export function parseHostFwd(rule: string): { ok: true; fwd: HostFwd } | { ok: false; error: string } {
  const fail = (reason: string) => ({ ok: false as const, error: `Invalid host forwarding rule '${rule}' (${reason})` });
  let rest = rule;
  let r = splitSep(rest, ':');
  if (!r) return fail('No : separators');
  let proto: 'tcp' | 'udp';
  if (r[0] === 'tcp' || r[0] === '') proto = 'tcp';
  else if (r[0] === 'udp') proto = 'udp';
  else return fail('Bad protocol name');
  rest = r[1];
  r = splitSep(rest, ':');
  if (!r) return fail('Missing : separator');
  const hostAddr = r[0];
  if (hostAddr !== '' && inetAton(hostAddr) === undefined) return fail('Bad host address');
  rest = r[1];
  r = splitSep(rest, '-');
  if (!r) return fail('Bad host port separator');
  const hostPort = strictInt(r[0]);
  if (hostPort === undefined || hostPort < 0 || hostPort > 65535) return fail('Bad host port');
  rest = r[1];
  r = splitSep(rest, ':');
  if (!r) return fail('Missing guest address');
  const guest = r[0];
  if (guest !== '' && inetAton(guest) === undefined) return fail('Bad guest address');
  const guestPort = strictInt(r[1]);
  if (guestPort === undefined || guestPort < 1 || guestPort > 65535) return fail('Bad guest port');
  return {
    ok: true,
    fwd: {
      proto,
      hostAddr: hostAddr === '' ? '' : ipv4ToString(inetAton(hostAddr)!),
      hostPort,
      guest: guest === '' ? '' : ipv4ToString(inetAton(guest)!),
      guestPort,
      raw: rule,
    },
  };
}

/**
 * qnet's own hostfwd syntax beyond QEMU (whose parser still refuses IPv6 there): either side
 * may be an IPv6 address in brackets, `tcp:[::1]:2222-:22`, `tcp:[::]:8080-[fec0::15]:80`,
 * or IPv4 as QEMU has it. Returns null when the rule has no bracket (QEMU's parser decides).
 */
export function parseHostFwdExtended(rule: string): { ok: true; fwd: HostFwd } | { ok: false; error: string } | null {
  if (!rule.includes('[')) return null;
  const fail = (reason: string) => ({ ok: false as const, error: `Invalid host forwarding rule '${rule}' (${reason})` });
  const m = /^(tcp|udp|)?:(\[[^\]]*\]|[^:\[\]-]*):(\d+)-(\[[^\]]*\]|[^:\[\]]*):(\d+)$/.exec(rule);
  if (!m) return fail('expected [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport, IPv6 addresses in brackets');
  const addr = (s: string, what: string): string | { error: string } => {
    if (s === '') return '';
    if (s.startsWith('[')) {
      const b = parseIpv6(s.slice(1, -1));
      return b ? ipv6ToString(b) : { error: `Bad ${what} address` };
    }
    const a = inetAton(s);
    return a === undefined ? { error: `Bad ${what} address` } : ipv4ToString(a);
  };
  const hostAddr = addr(m[2], 'host');
  if (typeof hostAddr !== 'string') return fail(hostAddr.error);
  const guest = addr(m[4], 'guest');
  if (typeof guest !== 'string') return fail(guest.error);
  const hostPort = Number(m[3]);
  const guestPort = Number(m[5]);
  if (hostPort > 65535) return fail('Bad host port');
  if (!(guestPort >= 1 && guestPort <= 65535)) return fail('Bad guest port');
  return { ok: true, fwd: { proto: m[1] === 'udp' ? 'udp' : 'tcp', hostAddr, hostPort, guest, guestPort, raw: rule } };
}

export function parseGuestFwd(rule: string): { ok: true; fwd: GuestFwd } | { ok: false; error: string } {
  const fail = (why: string) => ({ ok: false as const, error: `Invalid guest forwarding rule '${rule}' (${why})` });
  let r = splitSep(rule, ':');
  if (!r) return fail("expected [tcp]:server:port-target");
  if (r[0] !== 'tcp' && r[0] !== '') return fail(`protocol '${r[0]}' is not supported, only tcp`);
  r = splitSep(r[1], ':');
  if (!r) return fail("missing ':' between server and port");
  const server = r[0];
  if (server !== '' && inetAton(server) === undefined) return fail(`bad server address '${server}'`);
  r = splitSep(r[1], '-');
  if (!r) return fail("missing '-' before the target");
  const port = strictInt(r[0]);
  if (port === undefined || port < 1 || port > 65535) return fail(`bad port '${r[0]}'`);
  const spec = r[1];
  let target: GuestFwdTarget;
  if (spec.startsWith('cmd:')) {
    target = { kind: 'cmd', command: spec.slice(4) };
  } else if (spec.startsWith('tcp:')) {
    const [addr, ...options] = spec.slice(4).split(',');
    const c = addr.lastIndexOf(':');
    if (c < 0) return fail(`chardev '${spec}' needs tcp:host:port`);
    target = { kind: 'tcp', host: addr.slice(0, c), port: addr.slice(c + 1), options };
  } else if (spec.startsWith('unix:')) {
    const [path, ...options] = spec.slice(5).split(',');
    target = { kind: 'unix', path, options };
  } else if (spec === '') {
    return fail('missing target after -');
  } else {
    target = { kind: 'chardev', spec };
  }
  return {
    ok: true,
    fwd: { proto: 'tcp', server: server === '' ? '' : ipv4ToString(inetAton(server)!), port, target, raw: rule },
  };
}

/** Netmask from the class of the address, as slirp does when net= has no '/'. */
function classfulMask(addr: number): number {
  if (!(addr & 0x80000000)) return 0xff000000;
  if ((addr & 0xfff00000) >>> 0 === 0xac100000) return 0xfff00000;
  if ((addr & 0xc0000000) >>> 0 === 0x80000000) return 0xffff0000;
  if ((addr & 0xffff0000) >>> 0 === 0xc0a80000) return 0xffff0000;
  if ((addr & 0xffff0000) >>> 0 === 0xc6120000) return 0xfffe0000;
  if ((addr & 0xe0000000) >>> 0 === 0xe0000000) return 0xffffff00;
  return 0xfffffff0;
}

function prefixOf(mask: number): number | null {
  let n = 0;
  while (n < 32 && mask & (0x80000000 >>> n)) n++;
  return ((n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0) === mask >>> 0) ? n : null;
}

/**
 * Parse `-netdev user` options (without the leading 'user,' or with it; an
 * id= is tolerated). Errors read like QEMU's and name the option.
 */
export function parseUserNetdev(optstr: string): ParseUserResult {
  const parsed = parseQemuOpts(optstr);
  if (parsed.error) return { ok: false, error: parsed.error };
  const warnings: string[] = [];
  const single = new Map<string, string>();
  const lists: Record<string, string[]> = { hostfwd: [], guestfwd: [], dnssearch: [] };
  let id: string | undefined;
  const known = new Set<string>(USER_OPTIONS);
  for (const [idx, e] of parsed.entries.entries()) {
    if (idx === 0 && e.shortBool && e.key === 'user') continue; // 'user,...' as written after -netdev
    if (e.key === 'type') {
      if (e.value !== 'user') return { ok: false, error: `type '${e.value}' is not a user-mode network; expected type=user` };
      continue;
    }
    if (e.key === 'id') { id = e.value; continue; }
    if (!known.has(e.key)) {
      return { ok: false, error: `Invalid parameter '${e.key}' (valid -netdev user options: ${USER_OPTIONS.join(', ')})` };
    }
    if (e.shortBool) {
      if (!BOOL_OPTIONS.has(e.key)) return { ok: false, error: `Parameter '${e.key}' expects a value; write ${e.key}=VALUE` };
      warnings.push(`short-form boolean option '${e.value === 'off' ? 'no' : ''}${e.key}' is deprecated; write ${e.key}=${e.value}`);
    }
    if (LIST_OPTIONS.has(e.key)) lists[e.key].push(e.value);
    else single.set(e.key, e.value);
  }
  const bools: Record<string, boolean | undefined> = {};
  for (const k of BOOL_OPTIONS) {
    const v = single.get(k);
    if (v === undefined) continue;
    const b = parseBool(v);
    if (b === undefined) return { ok: false, error: `Parameter '${k}' expects 'on' or 'off'` };
    bools[k] = b;
  }
  // ipv6-net=ADDR/LEN is a convenience spelling of ipv6-prefix + ipv6-prefixlen.
  const ipv6net = single.get('ipv6-net');
  if (ipv6net !== undefined) {
    if (single.has('ipv6-prefix') || single.has('ipv6-prefixlen')) {
      return { ok: false, error: "ipv6-net= can't be combined with ipv6-prefix= or ipv6-prefixlen=" };
    }
    const [p, l] = ipv6net.split('/');
    single.set('ipv6-prefix', p);
    if (l !== undefined) single.set('ipv6-prefixlen', l);
  }
  // Giving only one of ipv4/ipv6 selects that family alone (QEMU's legacy rule).
  const ipv4 = bools.ipv4 ?? (bools.ipv6 === undefined ? true : !bools.ipv6);
  const ipv6 = bools.ipv6 ?? (bools.ipv4 === undefined ? true : !bools.ipv4);
  const restrict = bools.restrict ?? false;

  let vnetwork = single.get('net');
  const ip = single.get('ip');
  if (vnetwork === undefined && ip !== undefined) {
    vnetwork = `${ip}/24`;
    warnings.push("'ip=' is a legacy spelling; write net=ADDR/24 instead");
  }
  const vhost = single.get('host');
  const vdns = single.get('dns');
  const vdhcp = single.get('dhcpstart');
  const vprefix6 = single.get('ipv6-prefix');
  const vhost6 = single.get('ipv6-host');
  const vdns6 = single.get('ipv6-dns');

  if (!ipv4 && (vnetwork !== undefined || vhost !== undefined || vdns !== undefined)) {
    return { ok: false, error: 'IPv4 disabled but netmask/host/dns provided (drop net=, host= and dns=, or turn ipv4 back on)' };
  }
  if (!ipv6 && (vprefix6 !== undefined || vhost6 !== undefined || vdns6 !== undefined)) {
    return { ok: false, error: 'IPv6 disabled but prefix/host6/dns6 provided (drop ipv6-prefix=, ipv6-host= and ipv6-dns=, or turn ipv6 on)' };
  }
  if (!ipv4 && !ipv6) return { ok: false, error: 'IPv4 and IPv6 disabled: enable at least one of ipv4= and ipv6=' };

  let net = 0x0a000200, mask = 0xffffff00;
  let host = 0x0a000202, dhcp = 0x0a00020f, dns = 0x0a000203;
  if (vnetwork !== undefined) {
    const slash = vnetwork.indexOf('/');
    if (slash < 0) {
      const a = inetAton(vnetwork);
      if (a === undefined) return { ok: false, error: `net: Failed to parse netmask: '${vnetwork}' is not an IPv4 address (write net=ADDR/LEN, e.g. net=10.0.2.0/24)` };
      net = a;
      mask = classfulMask(a);
    } else {
      const a = inetAton(vnetwork.slice(0, slash));
      if (a === undefined) return { ok: false, error: `net: Failed to parse netmask: '${vnetwork.slice(0, slash)}' is not an IPv4 address` };
      net = a;
      const m = vnetwork.slice(slash + 1);
      if (/^[+-]?\d+$/.test(m)) {
        const shift = parseInt(m, 10);
        if (shift < 4 || shift > 32) return { ok: false, error: `net: Invalid netmask provided (must be in range 4-32), got /${m}` };
        mask = shift === 0 ? 0 : (0xffffffff << (32 - shift)) >>> 0;
      } else {
        const mm = inetAton(m);
        if (mm === undefined) return { ok: false, error: `net: Failed to parse netmask (trailing chars): '${m}'` };
        mask = mm;
      }
    }
    net = (net & mask) >>> 0;
    host = (net | (0x0202 & ~mask)) >>> 0;
    dhcp = (net | (0x020f & ~mask)) >>> 0;
    dns = (net | (0x0203 & ~mask)) >>> 0;
  }
  const inNet = (a: number) => ((a & mask) >>> 0) === net;
  if (vhost !== undefined) {
    const a = inetAton(vhost);
    if (a === undefined) return { ok: false, error: `host: Failed to parse host '${vhost}': expected an IPv4 address` };
    host = a;
  }
  if (!inNet(host)) return { ok: false, error: `host: Host doesn't belong to network: ${ipv4ToString(host)} is outside ${ipv4ToString(net)}/${prefixOf(mask) ?? ipv4ToString(mask)}` };
  if (vdns !== undefined) {
    const a = inetAton(vdns);
    if (a === undefined) return { ok: false, error: `dns: Failed to parse DNS '${vdns}': expected an IPv4 address` };
    dns = a;
  }
  if (restrict && !inNet(dns)) return { ok: false, error: `dns: DNS doesn't belong to network (restrict=on needs dns= inside ${ipv4ToString(net)}/${prefixOf(mask) ?? ipv4ToString(mask)})` };
  if (dns === host) return { ok: false, error: `dns: DNS must be different from host (both are ${ipv4ToString(host)})` };
  if (vdhcp !== undefined) {
    const a = inetAton(vdhcp);
    if (a === undefined) return { ok: false, error: `dhcpstart: Failed to parse DHCP start address '${vdhcp}'` };
    dhcp = a;
  }
  if (!inNet(dhcp)) return { ok: false, error: `dhcpstart: DHCP doesn't belong to network: ${ipv4ToString(dhcp)} is outside ${ipv4ToString(net)}/${prefixOf(mask) ?? ipv4ToString(mask)}` };
  if (dhcp === host || dhcp === dns) return { ok: false, error: `dhcpstart: DHCP must be different from host and DNS (${ipv4ToString(dhcp)})` };

  const smbserver = single.get('smbserver');
  if (smbserver !== undefined && inetAton(smbserver) === undefined) {
    return { ok: false, error: `smbserver: Failed to parse SMB address '${smbserver}': expected an IPv4 address` };
  }

  const prefix6 = parseIpv6(vprefix6 ?? 'fec0::');
  if (!prefix6) return { ok: false, error: `ipv6-prefix: Failed to parse IPv6 prefix '${vprefix6}'` };
  let prefix6Len = 64;
  const vlen = single.get('ipv6-prefixlen');
  if (vlen !== undefined) {
    const n = parseCInt(vlen);
    if (n === undefined) return { ok: false, error: `Parameter 'ipv6-prefixlen' expects a number, got '${vlen}'` };
    if (n !== 0) prefix6Len = n;
  }
  if (prefix6Len < 0 || prefix6Len > 126) {
    return { ok: false, error: 'ipv6-prefixlen: Invalid IPv6 prefix provided (IPv6 prefix length must be between 0 and 126)' };
  }
  let host6: number[];
  if (vhost6 !== undefined) {
    const h = parseIpv6(vhost6);
    if (!h) return { ok: false, error: `ipv6-host: Failed to parse IPv6 host '${vhost6}'` };
    if (!ipv6SameNet(prefix6, h, prefix6Len)) return { ok: false, error: `ipv6-host: IPv6 Host doesn't belong to network ${ipv6ToString(prefix6)}/${prefix6Len}` };
    host6 = h;
  } else {
    host6 = [...prefix6];
    host6[15] |= 2;
  }
  let dns6: number[];
  if (vdns6 !== undefined) {
    const d = parseIpv6(vdns6);
    if (!d) return { ok: false, error: `ipv6-dns: Failed to parse IPv6 DNS '${vdns6}'` };
    if (restrict && !ipv6SameNet(prefix6, d, prefix6Len)) return { ok: false, error: `ipv6-dns: IPv6 DNS doesn't belong to network ${ipv6ToString(prefix6)}/${prefix6Len}` };
    dns6 = d;
  } else {
    dns6 = [...prefix6];
    dns6[15] |= 3;
  }
  const domainname = single.get('domainname');
  if (domainname !== undefined && domainname === '') return { ok: false, error: "'domainname' parameter cannot be empty" };
  if (domainname !== undefined && Buffer.byteLength(domainname) > 255) return { ok: false, error: "'domainname' parameter cannot exceed 255 bytes" };
  const hostname = single.get('hostname');
  if (hostname !== undefined && Buffer.byteLength(hostname) > 255) return { ok: false, error: "'hostname' parameter cannot exceed 255 bytes" };
  const tftpServerName = single.get('tftp-server-name');
  if (tftpServerName !== undefined && Buffer.byteLength(tftpServerName) > 255) return { ok: false, error: "'tftp-server-name' parameter cannot exceed 255 bytes" };
  for (const d of lists.dnssearch) {
    // slirp only warns and drops the list, so this is not fatal.
    if (d === '' || d.length > 255 || d.split('.').some((l, i, a) => l.length > 63 || (l === '' && i !== a.length - 1))) {
      warnings.push(`dnssearch: '${d}' is not a valid domain name; QEMU ignores the search list`);
    }
  }

  const hostfwd: HostFwd[] = [];
  for (const rule of lists.hostfwd) {
    const r = parseHostFwd(rule);
    if (!r.ok) return { ok: false, error: `hostfwd: ${r.error}; expected [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport` };
    hostfwd.push(r.fwd);
  }
  const guestfwd: GuestFwd[] = [];
  for (const rule of lists.guestfwd) {
    const r = parseGuestFwd(rule);
    if (!r.ok) return { ok: false, error: `guestfwd: ${r.error}; expected [tcp]:server:port-cmd:COMMAND or [tcp]:server:port-CHARDEV` };
    // slirp puts the virtual server inside the network (default net+.4) and off the host and DNS addresses.
    const srv = r.fwd.server === '' ? ((net | (0x04 & ~mask)) >>> 0) : inetAton(r.fwd.server)!;
    if (!inNet(srv) || srv === host || srv === dns) {
      return { ok: false, error: `guestfwd: Conflicting/invalid host:port in guest forwarding rule '${rule}': the server address must be inside ${ipv4ToString(net)}/${prefixOf(mask) ?? ipv4ToString(mask)} and differ from host ${ipv4ToString(host)} and dns ${ipv4ToString(dns)}` };
    }
    guestfwd.push(r.fwd);
  }

  const config: UserNetdevConfig = {
    ...(id !== undefined ? { id } : {}),
    ipv4, ipv6,
    net: ipv4ToString(net),
    netmask: ipv4ToString(mask),
    prefixLength: prefixOf(mask),
    host: ipv4ToString(host),
    dns: ipv4ToString(dns),
    dhcpstart: ipv4ToString(dhcp),
    restrict,
    dnssearch: lists.dnssearch,
    ipv6Prefix: ipv6ToString(prefix6),
    ipv6PrefixLength: prefix6Len,
    ipv6Host: ipv6ToString(host6),
    ipv6Dns: ipv6ToString(dns6),
    hostfwd,
    guestfwd,
    warnings,
  };
  const opt = (k: string) => single.get(k);
  if (hostname !== undefined) config.hostname = hostname;
  if (domainname !== undefined) config.domainname = domainname;
  if (opt('tftp') !== undefined) config.tftp = opt('tftp');
  if (tftpServerName !== undefined) config.tftpServerName = tftpServerName;
  if (opt('bootfile') !== undefined) config.bootfile = opt('bootfile');
  if (opt('smb') !== undefined) config.smb = opt('smb');
  if (smbserver !== undefined) config.smbserver = ipv4ToString(inetAton(smbserver)!);
  return { ok: true, config };
}
