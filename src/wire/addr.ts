// Address helpers: IPv4 as unsigned 32-bit numbers, MACs as 6 bytes in a Buffer (with a 48-bit
// numeric key for Maps), IPv6 as 16 bytes in a Buffer.
//
// Trade-offs: numbers for IPv4 make comparisons, masks and Map keys free of allocation; MAC keys fit
// in a double exactly (48 < 53 bits). String conversions allocate and are meant for config, logs and
// tests, not the packet path. Parsers are strict (no octal/hex IPv4 forms, no IPv6 zone ids) since
// their input is configuration, where a surprising interpretation is worse than an error.

/** Dotted-quad string of a u32 address. */
export function ip4ToString(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** Strict dotted-quad parse (four decimal parts 0..255, no leading zeros); null if invalid. */
export function parseIp4(s: string): number | null {
  let n = 0;
  let parts = 0;
  let i = 0;
  const len = s.length;
  while (parts < 4) {
    const start = i;
    let v = 0;
    while (i < len) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      v = v * 10 + (c - 48);
      i++;
      if (i - start > 3) return null;
    }
    const digits = i - start;
    if (digits === 0 || v > 255 || (digits > 1 && s.charCodeAt(start) === 48)) return null;
    n = n * 256 + v;
    parts++;
    if (parts < 4) {
      if (i >= len || s.charCodeAt(i) !== 46) return null;
      i++;
    }
  }
  return i === len ? n >>> 0 : null;
}

export function ip4FromBuf(buf: Buffer, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
}

export function ip4ToBuf(n: number, buf: Buffer, off: number): void {
  buf[off] = n >>> 24;
  buf[off + 1] = n >>> 16;
  buf[off + 2] = n >>> 8;
  buf[off + 3] = n;
}

/** Netmask of a prefix length 0..32 as u32. */
export function maskOf(prefix: number): number {
  return prefix <= 0 ? 0 : prefix >= 32 ? 0xffffffff : (0xffffffff << (32 - prefix)) >>> 0;
}

export function inSubnet(ip: number, net: number, prefix: number): boolean {
  return ((ip ^ net) & maskOf(prefix)) === 0;
}

/** 'a.b.c.d/len' -> {addr, prefix}; the address is returned as written (not masked). */
export function parseCidr(s: string): { addr: number; prefix: number } | null {
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const addr = parseIp4(s.slice(0, slash));
  const p = s.slice(slash + 1);
  if (addr === null || !/^(0|[1-9][0-9]?)$/.test(p)) return null;
  const prefix = Number(p);
  return prefix <= 32 ? { addr, prefix } : null;
}

const HEX = '0123456789abcdef';

/** 'aa:bb:cc:dd:ee:ff' (lowercase) from buf[off, off+6). */
export function macToString(buf: Buffer, off: number): string {
  let s = '';
  for (let k = 0; k < 6; k++) {
    const b = buf[off + k];
    if (k) s += ':';
    s += HEX[b >> 4] + HEX[b & 15];
  }
  return s;
}

/** Parses 'aa:bb:cc:dd:ee:ff' or with '-' separators (one kind throughout); null if invalid. */
export function parseMac(s: string): Buffer | null {
  return /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/.test(s) ? macBytes(s) : null;
}

/**
 * A MAC as QEMU takes it: six hex bytes, each followed by ':' or '-' (mixed allowed, as
 * qdev's mac property and net_parse_macaddr do); `oneDigit` also takes one-digit bytes
 * (-net/-nic macaddr=). null if invalid.
 */
export function parseQemuMac(s: string, oneDigit: boolean): Buffer | null {
  const re = oneDigit ? /^[0-9a-fA-F]{1,2}([:-][0-9a-fA-F]{1,2}){5}$/ : /^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/;
  return re.test(s) ? macBytes(s) : null;
}

function macBytes(s: string): Buffer {
  const parts = s.split(/[:-]/);
  const out = Buffer.allocUnsafe(6);
  for (let k = 0; k < 6; k++) out[k] = parseInt(parts[k], 16);
  return out;
}

/** The 48-bit MAC at buf[off] as a number, for use as a Map key. */
export function macKey(buf: Buffer, off: number): number {
  return ((buf[off] << 8) | buf[off + 1]) * 0x100000000 +
    (((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) >>> 0);
}

/** a[ao, ao+6) === b[bo, bo+6): in JS (Buffer.compare with offsets crosses into C++, per packet). */
export function macEquals(a: Buffer, ao: number, b: Buffer, bo: number): boolean {
  return a[ao] === b[bo] && a[ao + 1] === b[bo + 1] && a[ao + 2] === b[bo + 2] &&
    a[ao + 3] === b[bo + 3] && a[ao + 4] === b[bo + 4] && a[ao + 5] === b[bo + 5];
}

/** a[ao, ao+16) === b[bo, bo+16) (IPv6 addresses), in JS for the same reason. */
export function equal16(a: Buffer, ao: number, b: Buffer, bo: number): boolean {
  // from the end: addresses on one segment share their first half
  for (let k = 15; k >= 0; k--) if (a[ao + k] !== b[bo + k]) return false;
  return true;
}

/** Writes the MAC of a macKey() value into buf[off, off+6). */
export function macKeyToBuf(key: number, buf: Buffer, off: number): void {
  const hi = Math.floor(key / 0x100000000);
  const lo = key >>> 0;
  buf[off] = hi >>> 8;
  buf[off + 1] = hi;
  buf[off + 2] = lo >>> 24;
  buf[off + 3] = lo >>> 16;
  buf[off + 4] = lo >>> 8;
  buf[off + 5] = lo;
}

/** 'aa:bb:cc:dd:ee:ff' for a macKey() value. */
export function macKeyToString(key: number): string {
  const b = Buffer.allocUnsafe(6);
  macKeyToBuf(key, b, 0);
  return macToString(b, 0);
}

/** macKey() of a MAC in text form, or -1 if it does not parse. */
export function macKeyFromString(s: string): number {
  const b = parseMac(s);
  return b ? macKey(b, 0) : -1;
}

/** A new 6-byte Buffer holding the MAC of a macKey() value. */
export function macFromKey(key: number): Buffer {
  const b = Buffer.allocUnsafe(6);
  macKeyToBuf(key, b, 0);
  return b;
}

/** Group bit set (includes broadcast). */
export function isMulticastMac(buf: Buffer, off: number): boolean {
  return (buf[off] & 1) === 1;
}

export function isBroadcastMac(buf: Buffer, off: number): boolean {
  return (buf[off] & buf[off + 1] & buf[off + 2] & buf[off + 3] & buf[off + 4] & buf[off + 5]) === 0xff;
}

/** RFC 5952 text form: lowercase, longest run (>= 2) of zero groups as '::' (first on ties),
 *  and IPv4-mapped addresses (::ffff:0:0/96) with a dotted-quad tail (RFC 5952 §5). */
export function ip6ToString(buf: Buffer, off: number): string {
  const g = new Array<number>(8);
  for (let k = 0; k < 8; k++) g[k] = (buf[off + 2 * k] << 8) | buf[off + 2 * k + 1];
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return '::ffff:' + ip4ToString(ip4FromBuf(buf, off + 12));
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let k = 0; k < 8;) {
    if (g[k] !== 0) { k++; continue; }
    let e = k;
    while (e < 8 && g[e] === 0) e++;
    if (e - k > bestLen) { bestStart = k; bestLen = e - k; }
    k = e;
  }
  let s = '';
  for (let k = 0; k < 8; k++) {
    if (k === bestStart) {
      s += '::';
      k += bestLen - 1;
      continue;
    }
    if (s !== '' && !s.endsWith(':')) s += ':';
    s += g[k].toString(16);
  }
  return s;
}

/** Parses any RFC 4291 text form (including '::' and a dotted-quad tail); null if invalid. */
export function parseIp6(s: string): Buffer | null {
  if (s.length < 2 || s.length > 45) return null;
  const groups: number[] = [];
  let gap = -1;
  let rest = s;
  if (rest.startsWith('::')) {
    gap = 0;
    rest = rest.slice(2);
  } else if (rest.startsWith(':')) {
    return null;
  }
  if (rest !== '') {
    const parts = rest.split(':');
    for (let k = 0; k < parts.length; k++) {
      const p = parts[k];
      if (p === '') {
        // An empty part is the '::' (only once, not at the very end unless that is '::').
        if (gap >= 0) return null;
        gap = groups.length;
        if (k === parts.length - 1) return null;
        if (k === parts.length - 2 && parts[k + 1] === '') { k++; continue; }
        continue;
      }
      if (k === parts.length - 1 && p.includes('.')) {
        const v4 = parseIp4(p);
        if (v4 === null) return null;
        groups.push(v4 >>> 16, v4 & 0xffff);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
      groups.push(parseInt(p, 16));
    }
  }
  if (gap < 0 ? groups.length !== 8 : groups.length > 7) return null;
  const out = Buffer.alloc(16);
  const tail = gap < 0 ? 0 : groups.length - gap;
  for (let k = 0; k < groups.length; k++) {
    const pos = gap >= 0 && k >= gap ? 8 - tail + (k - gap) : k;
    out.writeUInt16BE(groups[k], pos * 2);
  }
  return out;
}
