// The daemon's persistent state: leases, runtime forwards, MAC assignments per network, the
// VMs it joined, and the host objects of kernel networks (so a restart adopts them). Written atomically (temp file, fsync, rename) after changes, debounced,
// so a crash leaves either the old or the new file, never half of one.
//
// Loading trusts nothing: the file is checked against its schema (schema/state.schema.json,
// mirrored by validateState below; properties it does not know are ignored). A file that
// cannot be read, is not JSON or has the wrong shape is moved aside as
// `state.json.invalid-<UTC timestamp>` (never overwritten: its leases and forwards can still
// be recovered by hand), the problem is logged naming both files and what was wrong, and the
// daemon starts with empty state; the configuration is unaffected.
import fs from 'node:fs';
import path from 'node:path';
import type { LeaseRecord } from '../services/dhcp.ts';
import type { LeaseRecord6 } from '../services/dhcp6-leases.ts';
import type { ForwardRule, VmRecord } from './types.ts';
import type { VfAssignment } from '../host/pci/vfpool.ts';
import type { HostRecord } from '../host/kernel-network.ts';
import { logger } from '../util/log.ts';

const log = logger('state');

export interface NetworkState {
  leases: LeaseRecord[];
  /** DHCPv6 leases (absent in state files written before IPv6) */
  leases6?: LeaseRecord6[];
  forwards: ForwardRule[];
  /** VM name -> MAC */
  macs: Record<string, string>;
  /** mode hostdev: the VFs assigned to VMs */
  vfs?: VfAssignment[];
}

export interface State {
  version: 1;
  networks: Record<string, NetworkState>;
  vms: VmRecord[];
  /** kernel networks: what qnet made on the host (bridges, moved uplinks, tables, forwarding) */
  host?: HostRecord;
}

export function emptyNetworkState(): NetworkState { return { leases: [], forwards: [], macs: {} }; }

class StateError extends Error {}

type Json = unknown;

function describe(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

function obj(v: Json, where: string, what: string): Record<string, Json> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new StateError(`${where}: expected ${what}, got ${describe(v)}`);
  return v as Record<string, Json>;
}

function arr(v: Json, where: string, what: string): Json[] {
  if (!Array.isArray(v)) throw new StateError(`${where}: expected a list of ${what}, got ${describe(v)}`);
  return v;
}

function string(o: Record<string, Json>, k: string, where: string, optional = false): void {
  const v = o[k];
  if (v === undefined && optional) return;
  if (typeof v !== 'string') throw new StateError(`${where}.${k}: expected a string, got ${v === undefined ? 'nothing' : describe(v)}`);
}

function integer(o: Record<string, Json>, k: string, where: string, min: number, max: number): void {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new StateError(`${where}.${k}: expected an integer ${min}-${max}, got ${v === undefined ? 'nothing' : describe(v)}`);
  }
}

function number(o: Record<string, Json>, k: string, where: string): void {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new StateError(`${where}.${k}: expected a number, got ${v === undefined ? 'nothing' : describe(v)}`);
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** The state file's schema (schema/state.schema.json), checked by hand; throws StateError naming the key. */
export function validateState(v: Json): State {
  const top = obj(v, '(top)', 'an object {version, networks, vms}');
  if (top.version !== 1) throw new StateError(`version: expected 1, got ${top.version === undefined ? 'nothing' : describe(top.version)}`);
  const nets = obj(top.networks, 'networks', 'an object mapping network names to their state');
  for (const [name, n] of Object.entries(nets)) {
    const w = `networks.${name}`;
    const ns = obj(n, w, 'an object {leases, forwards, macs}');
    arr(ns.leases, `${w}.leases`, 'leases').forEach((l, i) => {
      const lw = `${w}.leases[${i}]`;
      const r = obj(l, lw, 'a lease {mac, ip, expiresAt}');
      string(r, 'mac', lw); string(r, 'ip', lw); string(r, 'hostname', lw, true);
      if (typeof r.expiresAt !== 'number' || !Number.isFinite(r.expiresAt)) throw new StateError(`${lw}.expiresAt: expected a number, got ${describe(r.expiresAt)}`);
    });
    arr(ns.forwards, `${w}.forwards`, 'forwards').forEach((f, i) => {
      const fw = `${w}.forwards[${i}]`;
      const r = obj(f, fw, 'a forward {proto, hostAddr, hostPort, guest, guestPort}');
      if (r.proto !== 'tcp' && r.proto !== 'udp') throw new StateError(`${fw}.proto: expected "tcp" or "udp", got ${describe(r.proto)}`);
      string(r, 'hostAddr', fw); string(r, 'guest', fw);
      integer(r, 'hostPort', fw, 0, 65535); integer(r, 'guestPort', fw, 1, 65535);
    });
    const macs = obj(ns.macs, `${w}.macs`, 'an object mapping VM names to MACs');
    for (const [vm, mac] of Object.entries(macs)) {
      if (typeof mac !== 'string' || !MAC_RE.test(mac)) throw new StateError(`${w}.macs.${vm}: expected a MAC (52:54:00:12:34:56), got ${describe(mac)}`);
    }
    if (ns.leases6 !== undefined) {
      arr(ns.leases6, `${w}.leases6`, 'DHCPv6 leases').forEach((l, i) => {
        const lw = `${w}.leases6[${i}]`;
        const r = obj(l, lw, 'a DHCPv6 lease {mac, duid, iaid, ip, expiresAt}');
        string(r, 'mac', lw); string(r, 'duid', lw); string(r, 'ip', lw); string(r, 'hostname', lw, true);
        integer(r, 'iaid', lw, 0, 0xffffffff);
        number(r, 'expiresAt', lw);
      });
    }
    if (ns.vfs !== undefined) {
      arr(ns.vfs, `${w}.vfs`, 'VF assignments').forEach((x, i) => {
        const vw = `${w}.vfs[${i}]`;
        const r = obj(x, vw, 'a VF assignment {vm, bdf, pf, index, mac, vlan, pid, since, prev}');
        for (const k of ['vm', 'bdf', 'pf', 'mac']) string(r, k, vw);
        integer(r, 'index', vw, 0, 65535); integer(r, 'vlan', vw, 0, 4094); integer(r, 'pid', vw, 0, 0x7fffffff);
        number(r, 'since', vw);
        obj(r.prev, `${vw}.prev`, "the VF's settings before it was taken");
      });
    }
  }
  arr(top.vms, 'vms', 'VMs').forEach((x, i) => {
    const vw = `vms[${i}]`;
    const r = obj(x, vw, 'a VM {name, network, mac, model, pid, qmp, startedAt}');
    for (const k of ['name', 'network', 'mac', 'model', 'qmp']) string(r, k, vw);
    for (const k of ['sock', 'tap', 'hostdev']) string(r, k, vw, true);
    if (r.uid !== undefined) integer(r, 'uid', vw, 0, 0xffffffff);
    integer(r, 'pid', vw, 1, 0x7fffffff);
    integer(r, 'startedAt', vw, 0, Number.MAX_SAFE_INTEGER);
  });
  if (top.host !== undefined) {
    const h = obj(top.host, 'host', 'an object {forwarding, networks} (the kernel objects qnet made)');
    if (h.forwarding !== null) {
      const f = obj(h.forwarding, 'host.forwarding', 'null or a sysctl change {key, before, after}');
      for (const k of ['key', 'before', 'after']) string(f, k, 'host.forwarding');
    }
    for (const [name, n] of Object.entries(obj(h.networks, 'host.networks', 'an object mapping network names to their kernel objects'))) {
      const w = `host.networks.${name}`;
      const r = obj(n, w, 'a kernel network record {network, mode, bridge, createdBridge, table, forwarding, ports}');
      for (const k of ['network', 'mode', 'bridge']) string(r, k, w);
      for (const k of ['createdBridge', 'table', 'forwarding']) if (typeof r[k] !== 'boolean') throw new StateError(`${w}.${k}: expected true or false, got ${r[k] === undefined ? 'nothing' : describe(r[k])}`);
      if (r.uplink !== undefined) { const u = obj(r.uplink, `${w}.uplink`, 'an uplink record'); string(u, 'nic', `${w}.uplink`); string(u, 'bridge', `${w}.uplink`); }
      arr(r.ports, `${w}.ports`, 'ports').forEach((x, i) => {
        const pw = `${w}.ports[${i}]`;
        const q = obj(x, pw, 'a port {ifname, via}');
        string(q, 'ifname', pw); string(q, 'vm', pw, true);
        if (q.via !== 'tap' && q.via !== 'ifup') throw new StateError(`${pw}.via: expected "tap" or "ifup", got ${q.via === undefined ? 'nothing' : describe(q.via)}`);
      });
    }
  }
  return top as unknown as State;
}

/** `2026-12-01T22-54-09.123Z`: a timestamp usable in a file name. */
function stamp(now = new Date()): string {
  return now.toISOString().replace(/:/g, '-');
}

export class StateStore {
  state: State = { version: 1, networks: {}, vms: [] };
  private timer: NodeJS.Timeout | null = null;
  readonly file: string;
  /** what went wrong loading the state (for `qnet status` warnings) */
  readonly problems: string[] = [];

  /** dir '' keeps the state in memory only (a one-off `qnet user`). */
  constructor(readonly dir: string) {
    if (dir) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = dir ? path.join(dir, 'state.json') : '';
  }

  load(): State {
    if (!this.file) return this.state;
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return this.state; // first start
      this.reject(`cannot be read (${(e as Error).message})`);
      return this.state;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      this.reject(`is not valid JSON (${(e as Error).message}; truncated?)`);
      return this.state;
    }
    try {
      this.state = validateState(parsed);
    } catch (e) {
      if (!(e instanceof StateError)) throw e;
      this.reject(`does not have the state file's shape: ${e.message}`);
    }
    return this.state;
  }

  /** Move the bad file aside (never overwrite it) and say so. */
  private reject(why: string): void {
    const aside = `${this.file}.invalid-${stamp()}`;
    let moved: string;
    try {
      fs.renameSync(this.file, aside);
      moved = `moved it to ${aside}`;
    } catch (e) {
      moved = `could not move it aside (${(e as Error).message}), so state will not be saved over it`;
      this.readOnly = true;
    }
    const msg = `state file ${this.file} ${why}; ${moved}; starting with empty state (leases, runtime forwards, VM MACs and VMs from it are not restored)`;
    this.problems.push(msg);
    log.error(msg);
  }

  /** set when a bad file could not be moved aside: it is kept as it is */
  private readOnly = false;

  net(name: string): NetworkState {
    return (this.state.networks[name] ??= emptyNetworkState());
  }

  /** Save soon (changes come in bursts, e.g. several leases at start-up). */
  changed(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.save(); }, 100);
  }

  save(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (!this.file || this.readOnly) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      const fd = fs.openSync(tmp, 'w', 0o600);
      fs.writeSync(fd, JSON.stringify(this.state, null, 1));
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(tmp, this.file);
    } catch (e) {
      log.error('cannot save state', { file: this.file, error: (e as Error).message });
    }
  }
}
