// What the option parsers of src/qemu/analyze.ts share: the analysis context (what has been
// read so far, the diagnostics), diagnostic helpers, and small syntax checks QEMU applies to
// every option (ids, values of typed properties, host:port pairs, PCI addresses).
import type { BackendSpec, MachineInfo, OptSpec } from './model.ts';
import { inetAton, isDottedQuad, parseBool, parseCInt, parseSize, type OptEntry } from './opts.ts';
import type { Severity, Diagnostic, Netdev, Nic } from './analysis.ts';

export const ID_RE = /^[A-Za-z][A-Za-z0-9_.-]*$/;
export const USB_CONTROLLERS = /^(qemu-xhci|nec-usb-xhci|ich9-usb-[eu]hci\d|piix[34]-usb-uhci|pci-ohci|usb-ehci|sysbus-ohci)$/;

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

export function pciKey(a: { slot: number; fn: number }): string {
  return `${a.slot.toString(16)}.${a.fn}`;
}

export interface Ctx {
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

export function diag(ctx: Ctx, severity: Severity, code: string, option: string | undefined, message: string, hint?: string): void {
  ctx.diags.push({ severity, code, ...(option ? { option } : {}), message, ...(hint ? { hint } : {}) });
}

/** Check one typed option value; returns an error text or undefined. */
export function checkValue(spec: OptSpec, value: string): string | undefined {
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
export function checkHostPort(ctx: Ctx, opt: string, key: string, v: string): { host: string; port: number } | undefined {
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
export function bindHost(ctx: Ctx, opt: string, proto: 'tcp' | 'udp', host: string, port: number, what: string): void {
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
export function checkEntries(ctx: Ctx, opt: string, spec: BackendSpec | { name: string; options: OptSpec[] }, entries: OptEntry[], what: string): boolean {
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

export function get(entries: OptEntry[], key: string): string | undefined {
  let v: string | undefined;
  for (const e of entries) if (e.key === key) v = e.value;
  return v;
}

export function has(entries: OptEntry[], key: string): boolean {
  return entries.some((e) => e.key === key);
}

/** Backend-specific rules; returns false on error. */

export function checkId(ctx: Ctx, opt: string, id: string | undefined, required: boolean, kind: string): boolean {
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

export function splitTypeId(parsed: OptEntry[], implied: string): { type?: string; id?: string; rest: OptEntry[] } {
  let type: string | undefined, id: string | undefined;
  const rest: OptEntry[] = [];
  for (const e of parsed) {
    if (e.key === implied) type = e.value;
    else if (e.key === 'id') id ??= e.value; // QemuOpts takes the first id= and ignores the rest
    else rest.push(e);
  }
  return { type, id, rest };
}

export function unknownBackend(ctx: Ctx, opt: string, type: string | undefined, where: string, allowed: string[]): void {
  if (type === undefined) diag(ctx, 'error', 'missing-type', opt, "Parameter 'type' is missing", `start the option with the backend type: ${allowed.join(', ')}`);
  else diag(ctx, 'error', 'unknown-backend', opt, `Parameter 'type' does not accept value '${type}'`, `${where} backends: ${allowed.join(', ')}`);
}

export function nextId(ctx: Ctx, base: string): string {
  for (let i = 0; ; i++) {
    const id = `${base}${i}`;
    if (!ctx.netdevs.some((n) => n.id === id)) return id;
  }
}
