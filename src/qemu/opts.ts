// QEMU's option-string syntax, read the way QEMU reads it (util/qemu-option.c
// for QemuOpts, util/keyval.c for the "modern" keyval form, and the JSON form
// that -netdev and -device accept when the argument starts with '{').

export interface OptEntry {
  key: string;
  value: string;
  /** The key was not written: the first bare word took the implied key (e.g. 'type', 'driver'). */
  implied?: boolean;
  /** Written as a short-form boolean ('restrict' or 'norestrict'); QEMU deprecates this form. */
  shortBool?: boolean;
}

export interface ParsedOpts {
  entries: OptEntry[];
  /** The argument was JSON. */
  json: boolean;
  /** Syntax error, QEMU-like; entries then hold what was read before it. */
  error?: string;
}

export interface ParseOptions {
  /** Key that a leading value without '=' belongs to ('type' for -netdev, 'driver' for -device). */
  impliedKey?: string;
  /** keyval syntax (stream/dgram netdevs): no short-form booleans. */
  keyval?: boolean;
}

/** Read one value up to an unescaped ',' (',,' stands for a literal comma). */
function readValue(s: string, i: number): [string, number] {
  let out = '';
  while (i < s.length) {
    if (s[i] === ',') {
      if (s[i + 1] === ',') { out += ','; i += 2; continue; }
      break;
    }
    out += s[i++];
  }
  return [out, i];
}

export function parseQemuOpts(s: string, opts: ParseOptions = {}): ParsedOpts {
  if (s.trimStart().startsWith('{')) return parseJsonOpts(s);
  const entries: OptEntry[] = [];
  let i = 0;
  let first = true;
  while (i < s.length) {
    // The name runs to the first '=' or ','; names cannot contain escaped commas.
    let j = i;
    while (j < s.length && s[j] !== '=' && s[j] !== ',') j++;
    if (s[j] !== '=') {
      if (first && opts.impliedKey) {
        const [v, k] = readValue(s, i);
        entries.push({ key: opts.impliedKey, value: v, implied: true });
        i = k;
      } else {
        const name = s.slice(i, j);
        if (opts.keyval) {
          return { entries, json: false, error: `Expected '=' after parameter '${name}'` };
        }
        if (name === '') {
          // An empty item (",,"-free double comma can't happen here; a leading ',' can).
          i = j;
        } else if (name.startsWith('no') && name.length > 2) {
          entries.push({ key: name.slice(2), value: 'off', shortBool: true });
          i = j;
        } else {
          entries.push({ key: name, value: 'on', shortBool: true });
          i = j;
        }
      }
    } else {
      const name = s.slice(i, j);
      const [v, k] = readValue(s, j + 1);
      entries.push({ key: name, value: v });
      i = k;
    }
    first = false;
    if (s[i] === ',') i++;
  }
  return { entries, json: false };
}

/** Flatten a JSON option object into dotted keys the way keyval would spell them. */
function parseJsonOpts(s: string): ParsedOpts {
  let obj: unknown;
  try {
    obj = JSON.parse(s);
  } catch (e) {
    return { entries: [], json: true, error: `JSON parse error: ${(e as Error).message}` };
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    return { entries: [], json: true, error: 'JSON option must be an object' };
  }
  const entries: OptEntry[] = [];
  const walk = (prefix: string, v: unknown): void => {
    if (Array.isArray(v)) {
      // QAPI ['String'] lists (hostfwd, dnssearch) are [{"str": "..."}]; repeat the key.
      for (const el of v) {
        if (el && typeof el === 'object' && 'str' in (el as object)) walk(prefix, (el as { str: unknown }).str);
        else walk(prefix, el);
      }
    } else if (v && typeof v === 'object') {
      for (const [k, sub] of Object.entries(v as Record<string, unknown>)) walk(prefix ? `${prefix}.${k}` : k, sub);
    } else if (typeof v === 'boolean') {
      entries.push({ key: prefix, value: v ? 'on' : 'off' });
    } else {
      entries.push({ key: prefix, value: String(v) });
    }
  };
  walk('', obj);
  return { entries, json: true };
}

/** Escape a value for QemuOpts: commas are doubled. */
export function escapeValue(v: string): string {
  return v.replace(/,/g, ',,');
}

/** Build an option string; an entry with key === impliedKey placed first is written bare. */
export function formatQemuOpts(entries: Array<[string, string]>, impliedKey?: string): string {
  return entries
    .map(([k, v], idx) => (idx === 0 && impliedKey && k === impliedKey ? escapeValue(v) : `${k}=${escapeValue(v)}`))
    .join(',');
}

/** Values QEMU accepts for booleans (qapi_bool_parse). */
export function parseBool(v: string): boolean | undefined {
  if (['on', 'yes', 'true', 'y'].includes(v)) return true;
  if (['off', 'no', 'false', 'n'].includes(v)) return false;
  return undefined;
}

/** Integers the way qemu_strtoi/strtoll with base 0 read them: decimal, 0x hex, 0 octal. */
export function parseCInt(v: string): number | undefined {
  const t = v.trim();
  if (/^[+-]?0[xX][0-9a-fA-F]+$/.test(t)) return parseInt(t, 16);
  if (/^[+-]?0[0-7]+$/.test(t)) return parseInt(t, 8);
  if (/^[+-]?(0|[1-9][0-9]*)$/.test(t)) return parseInt(t, 10);
  return undefined;
}

/** QEMU size values: a number with an optional k/M/G/T suffix (binary multiples). */
export function parseSize(v: string): number | undefined {
  const m = /^([0-9]+(?:\.[0-9]+)?)([kKmMgGtTbB]?)$/.exec(v);
  if (!m) return undefined;
  const mult: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
  return Math.round(parseFloat(m[1]) * mult[m[2].toLowerCase()]);
}

/**
 * IPv4 address as inet_aton(3) reads it: 1 to 4 parts, each decimal, 0x-hex or
 * 0-octal; the last part fills the remaining bytes. Returns the 32-bit value.
 */
export function inetAton(s: string): number | undefined {
  if (s === '' || /\s/.test(s)) return undefined;
  const parts = s.split('.');
  if (parts.length > 4) return undefined;
  const nums: number[] = [];
  for (const p of parts) {
    let n: number;
    if (/^0[xX][0-9a-fA-F]*$/.test(p)) n = p.length === 2 ? 0 : parseInt(p.slice(2), 16);
    else if (/^0[0-7]*$/.test(p)) n = p.length === 1 ? 0 : parseInt(p.slice(1), 8);
    else if (/^[1-9][0-9]*$/.test(p)) n = parseInt(p, 10);
    else return undefined;
    nums.push(n);
  }
  const last = nums.length - 1;
  for (let i = 0; i < last; i++) if (nums[i] > 255) return undefined;
  const lastMax = [0xffffffff, 0xffffff, 0xffff, 0xff][last];
  if (nums[last] > lastMax) return undefined;
  let v = 0;
  for (let i = 0; i < last; i++) v = v * 256 + nums[i];
  v = v * (lastMax + 1) + nums[last];
  return v >>> 0;
}

export function ipv4ToString(v: number): string {
  return [24, 16, 8, 0].map((s) => (v >>> s) & 255).join('.');
}

/** Strict dotted-quad check, for places where QEMU uses inet_pton or getaddrinfo-numeric. */
export function isDottedQuad(s: string): boolean {
  return /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(s);
}

/** Parse an IPv6 address to 16 bytes (inet_pton semantics, with embedded IPv4 tail). */
export function parseIpv6(s: string): number[] | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  let tail: number[] = [];
  let head = s;
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.')) {
    const v4 = s.slice(lastColon + 1);
    if (!isDottedQuad(v4)) return undefined;
    tail = v4.split('.').map(Number);
    head = s.slice(0, lastColon + 1) + '0:0';
  }
  const dbl = head.split('::');
  if (dbl.length > 2) return undefined;
  const toGroups = (p: string): number[] | undefined => {
    if (p === '') return [];
    const gs = p.split(':');
    const out: number[] = [];
    for (const g of gs) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const a = toGroups(dbl[0]);
  const b = dbl.length === 2 ? toGroups(dbl[1]) : [];
  if (!a || !b) return undefined;
  let groups: number[];
  if (dbl.length === 2) {
    if (a.length + b.length > 7) return undefined;
    groups = [...a, ...new Array(8 - a.length - b.length).fill(0), ...b];
  } else {
    if (a.length !== 8) return undefined;
    groups = a;
  }
  const bytes: number[] = [];
  for (const g of groups) bytes.push(g >> 8, g & 255);
  if (tail.length) bytes.splice(12, 4, ...tail);
  return bytes;
}

export function ipv6SameNet(a: number[], b: number[], prefix: number): boolean {
  for (let bit = 0; bit < prefix; bit++) {
    const i = bit >> 3;
    const m = 0x80 >> (bit & 7);
    if ((a[i] & m) !== (b[i] & m)) return false;
  }
  return true;
}

export function ipv6ToString(b: number[]): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // Compress the longest run of zero groups, as inet_ntop does.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
