// The L2 switch: joins the ports of one Ethernet segment. It knows MACs, VLANs and port
// policy, nothing about IP (the gateway is just another port).
//
// - Learning: source MACs are learned per VLAN with aging; known unicast goes to one
//   port, broadcast/multicast/unknown unicast is flooded to the VLAN's other ports.
// - 802.1Q: access ports carry one VLAN untagged (priority-tagged frames accepted);
//   trunk ports carry tagged frames for allowed VLANs and untagged ones for the native VLAN.
// - Isolation (libvirt's <port isolated='yes'/>): isolated ports reach only non-isolated
//   ones, never each other.
// - Anti-spoofing: a port may be limited to a set of source MACs, or locked to the first
//   MAC it sends from.
// - MTU: frames whose payload exceeds the switch's (or the port's) MTU are dropped.
// - Guard: a port may carry a check its owner supplies (a network's source validation,
//   network/source-guard.ts), run on each frame the port sends, before its source is learned.
// Everything dropped is counted per port and reason; nothing is logged per frame.
//
// Hot path: frames are views borrowed from the ingress port; egress ports copy what they
// keep (see Port.send). Re-tagging between access and trunk ports is done in one scratch
// buffer. Time for aging comes from a coarse clock ticked by the sweep timer.
import { MAX_FRAME, Port } from '../link/port.ts';
import { PcapWriter } from './pcap.ts';
import { macKey, macKeyFromString, macKeyToString } from '../wire/addr.ts';

export const DEFAULT_VLAN = 1;

export type VlanConfig =
  | { mode: 'access'; vid: number }
  | { mode: 'trunk'; allowed?: number[]; native?: number };

export interface SwitchPortConfig {
  vlan?: VlanConfig;
  isolated?: boolean;
  /** true: lock to the first source MAC seen; a list: only these MACs (aa:bb:...) may send. */
  antiSpoof?: boolean | string[];
  /** Largest payload (bytes after the Ethernet header and tags); 0 = the switch's MTU. */
  mtu?: number;
}

export interface DropCounters {
  vlan: number;
  spoof: number;
  mtu: number;
  isolation: number;
  /** destination is on the ingress port itself */
  filtered: number;
  /** multicast source MAC or a truncated VLAN tag */
  malformed: number;
  /** refused by the port's guard */
  guard: number;
}

export class SwitchPort {
  readonly drops: DropCounters = { vlan: 0, spoof: 0, mtu: 0, isolation: 0, filtered: 0, malformed: 0, guard: 0 };
  /** the owner's check of each frame (l3: where the frame's payload starts; vid: its VLAN); false: drop */
  guard: ((frame: Buffer, l3: number, vid: number) => boolean) | null = null;
  allowedMacs: Set<number> | null = null;
  lockFirstMac = false;
  access = DEFAULT_VLAN;
  trunk = false;
  allowed: Set<number> | null = null; // trunk: null = all VLANs
  native = -1; // trunk: -1 = untagged frames dropped
  isolated = false;
  mtu = 0;
  capture: PcapWriter | null = null;

  constructor(readonly port: Port, cfg: SwitchPortConfig) { this.configure(cfg); }

  configure(cfg: SwitchPortConfig): void {
    const v = cfg.vlan ?? { mode: 'access', vid: DEFAULT_VLAN };
    for (const vid of v.mode === 'access' ? [v.vid] : [...(v.allowed ?? []), ...(v.native !== undefined ? [v.native] : [])]) {
      if (!Number.isInteger(vid) || vid < 1 || vid > 4094) throw new Error(`VLAN id ${vid} is out of range 1-4094`);
    }
    if (v.mode === 'access') {
      this.trunk = false;
      this.access = v.vid;
    } else {
      this.trunk = true;
      this.allowed = v.allowed ? new Set(v.allowed) : null;
      this.native = v.native ?? -1;
    }
    this.isolated = cfg.isolated ?? false;
    this.mtu = cfg.mtu ?? 0;
    this.lockFirstMac = cfg.antiSpoof === true;
    if (Array.isArray(cfg.antiSpoof)) {
      this.allowedMacs = new Set(cfg.antiSpoof.map((m) => {
        const k = macKeyFromString(m);
        if (k < 0) throw new Error(`anti-spoofing MAC '${m}' is not a MAC address (want aa:bb:cc:dd:ee:ff)`);
        return k;
      }));
    } else {
      this.allowedMacs = cfg.antiSpoof === true ? new Set() : null;
    }
  }

  member(vid: number): boolean {
    if (!this.trunk) return vid === this.access;
    return vid === this.native || (this.allowed === null ? true : this.allowed.has(vid));
  }
}

interface FdbEntry { sp: SwitchPort; seen: number }

export interface SwitchOptions {
  agingMs?: number;
  /** MTU for every port that sets none; 0 = no limit beyond the transport's. */
  mtu?: number;
  /** Upper bound on learned MACs per VLAN (a flood of random sources cannot grow memory). */
  maxMacs?: number;
}

export class Switch {
  readonly ports = new Map<Port, SwitchPort>();
  private readonly fdb = new Map<number, Map<number, FdbEntry>>();
  private readonly agingTicks: number;
  private readonly mtu: number;
  private readonly maxMacs: number;
  private now = 0; // coarse clock, in sweep ticks
  private readonly sweepTimer: NodeJS.Timeout;
  // Two scratch buffers: a frame normalised on ingress may be re-tagged on egress.
  private readonly inScratch = Buffer.allocUnsafe(MAX_FRAME + 4);
  private readonly outScratch = Buffer.allocUnsafe(MAX_FRAME + 4);
  private capture: PcapWriter | null = null;
  readonly stats = { flooded: 0, forwarded: 0, macMoves: 0, fdbFull: 0 };
  /** Called when a MAC appears on a different port than it was learned on. */
  onMacMove: ((mac: number, from: SwitchPort, to: SwitchPort) => void) | null = null;

  constructor(opts: SwitchOptions = {}) {
    const agingMs = opts.agingMs ?? 300_000;
    const tick = Math.max(50, Math.min(1000, agingMs / 4));
    this.agingTicks = Math.ceil(agingMs / tick);
    this.mtu = opts.mtu ?? 0;
    this.maxMacs = opts.maxMacs ?? 8192;
    this.sweepTimer = setInterval(() => this.tick(), tick);
    this.sweepTimer.unref();
  }

  attach(port: Port, cfg: SwitchPortConfig = {}): SwitchPort {
    const sp = new SwitchPort(port, cfg);
    this.ports.set(port, sp);
    port.onFrame = (frame) => this.input(frame, sp);
    port.directTo = (srcMac, dstMac) => this.directTo(sp, srcMac, dstMac);
    port.onClosed(() => this.detach(port));
    return sp;
  }

  detach(port: Port): void {
    const sp = this.ports.get(port);
    if (!sp) return;
    this.ports.delete(port);
    port.onFrame = null;
    port.directTo = null;
    for (const table of this.fdb.values()) {
      for (const [k, e] of table) if (e.sp === sp) table.delete(k);
    }
    sp.capture?.close();
  }

  /**
   * Record every frame entering the switch (or one port's traffic in both directions) into
   * `out`: a writer with its own sink, or a file path (for the commands whose user names it).
   */
  startCapture(out: string | PcapWriter, port?: Port): PcapWriter {
    const w = typeof out === 'string' ? PcapWriter.toFile(out) : out;
    if (port) {
      const sp = this.ports.get(port);
      if (!sp) { w.close(); throw new Error(`port ${port.name} is not on this switch`); }
      sp.capture?.close();
      sp.capture = w;
    } else {
      this.capture?.close();
      this.capture = w;
    }
    return w;
  }

  stopCapture(port?: Port): void {
    if (port) {
      const sp = this.ports.get(port);
      sp?.capture?.close();
      if (sp) sp.capture = null;
    } else {
      this.capture?.close();
      this.capture = null;
    }
  }

  /** MACs currently learned on a port. */
  macsOn(port: Port): string[] {
    const out: string[] = [];
    for (const table of this.fdb.values()) for (const [k, e] of table) if (e.sp.port === port) out.push(macKeyToString(k));
    return out;
  }

  lookup(mac: string, vid = DEFAULT_VLAN): Port | undefined {
    return this.fdb.get(vid)?.get(macKeyFromString(mac))?.sp.port;
  }

  /** The port the MAC at buf[off..off+6] was learned on (no string conversion: per-frame callers). */
  portOf(buf: Buffer, off = 0, vid = DEFAULT_VLAN): Port | undefined {
    return this.fdb.get(vid)?.get(macKey(buf, off))?.sp.port;
  }

  private tick(): void {
    this.now++;
    const limit = this.now - this.agingTicks;
    for (const table of this.fdb.values()) {
      for (const [k, e] of table) if (e.seen < limit) table.delete(k);
    }
  }

  /** Frame entering from a port: the forwarding decision. */
  input(frame: Buffer, sp: SwitchPort): void {
    const len = frame.length;
    let tagged = false;
    let vid: number;
    const et = frame.readUInt16BE(12);
    if (et === 0x8100 || et === 0x88a8) {
      if (len < 18) { sp.drops.malformed++; return; }
      tagged = true;
      vid = frame.readUInt16BE(14) & 0x0fff;
    } else {
      vid = 0;
    }
    if (tagged && vid === 0) {
      // Priority-tagged: the frame belongs to the port's untagged VLAN.
      frame = this.strip(frame, this.inScratch);
      tagged = false;
    }
    if (!sp.trunk) {
      if (tagged) { sp.drops.vlan++; return; }
      vid = sp.access;
    } else if (tagged) {
      if (vid !== sp.native && sp.allowed !== null && !sp.allowed.has(vid)) { sp.drops.vlan++; return; }
    } else {
      if (sp.native < 0) { sp.drops.vlan++; return; }
      vid = sp.native;
    }
    const payload = frame.length - (tagged ? 18 : 14);
    const mtu = sp.mtu || this.mtu;
    if (mtu > 0 && payload > mtu) { sp.drops.mtu++; return; }
    if (frame[6] & 1) { sp.drops.malformed++; return; }
    const src = macKey(frame, 6);
    if (sp.allowedMacs !== null && !sp.allowedMacs.has(src)) {
      if (sp.lockFirstMac && sp.allowedMacs.size === 0) sp.allowedMacs.add(src);
      else { sp.drops.spoof++; return; }
    }
    if (sp.guard !== null && !sp.guard(frame, tagged ? 18 : 14, vid)) { sp.drops.guard++; return; }
    let table = this.fdb.get(vid);
    if (table === undefined) { table = new Map(); this.fdb.set(vid, table); }
    const known = table.get(src);
    if (known === undefined) {
      if (table.size < this.maxMacs) table.set(src, { sp, seen: this.now });
      else this.stats.fdbFull++;
    } else {
      if (known.sp !== sp) {
        this.stats.macMoves++;
        this.onMacMove?.(src, known.sp, sp);
        known.sp = sp;
      }
      known.seen = this.now;
    }
    if (this.capture !== null) this.capture.write(frame);
    if (sp.capture !== null) sp.capture.write(frame);

    if ((frame[0] & 1) === 0) {
      const dst = table.get(macKey(frame, 0));
      if (dst !== undefined) {
        if (dst.sp === sp) { sp.drops.filtered++; return; }
        if (sp.isolated && dst.sp.isolated) { sp.drops.isolation++; return; }
        this.stats.forwarded++;
        this.output(frame, tagged, vid, dst.sp);
        return;
      }
    }
    this.stats.flooded++;
    for (const out of this.ports.values()) {
      if (out === sp || !out.member(vid)) continue;
      if (sp.isolated && out.isolated) continue;
      this.output(frame, tagged, vid, out);
    }
  }

  /**
   * The port a frame from `from` (source srcMac) to the unicast dstMac would leave by, when it
   * needs nothing but delivery: same untagged VLAN, no capture, not blocked by isolation, a
   * learned destination. Then a producer may build the frame in that port's output itself
   * (Port.reserveFrame); the switch counts it as forwarded and keeps the source's FDB entry
   * fresh. null: send through the switch as usual.
   */
  private directTo(sp: SwitchPort, srcMac: Buffer, dstMac: Buffer): Port | null {
    if (this.capture !== null || sp.capture !== null || sp.trunk || (dstMac[0] & 1) !== 0) return null;
    const table = this.fdb.get(sp.access);
    const dst = table?.get(macKey(dstMac, 0));
    if (dst === undefined) return null;
    const out = dst.sp;
    if (out === sp || out.capture !== null || (sp.isolated && out.isolated) || (out.trunk && sp.access !== out.native)) return null;
    const me = table!.get(macKey(srcMac, 0));
    if (me === undefined || me.sp !== sp) return null; // not learned here yet: let a frame through the switch first
    me.seen = this.now;
    this.stats.forwarded++;
    return out.port;
  }

  /** Send with the encapsulation the egress port wants for this VLAN. */
  private output(frame: Buffer, tagged: boolean, vid: number, out: SwitchPort): void {
    const wantTag = out.trunk && vid !== out.native;
    let f = frame;
    if (wantTag && !tagged) f = this.tag(frame, vid);
    else if (!wantTag && tagged) f = this.strip(frame, this.outScratch);
    if (out.capture !== null) out.capture.write(f);
    out.port.send(f);
  }

  /** Frame without its outer tag, in a scratch buffer (a view borrowed until the next call). */
  private strip(frame: Buffer, s: Buffer): Buffer {
    frame.copy(s, 0, 0, 12);
    frame.copy(s, 12, 16);
    return s.subarray(0, frame.length - 4);
  }

  private tag(frame: Buffer, vid: number): Buffer {
    const s = this.outScratch;
    frame.copy(s, 0, 0, 12);
    s.writeUInt16BE(0x8100, 12);
    s.writeUInt16BE(vid & 0x0fff, 14);
    frame.copy(s, 16, 12);
    return s.subarray(0, frame.length + 4);
  }

  close(): void {
    clearInterval(this.sweepTimer);
    this.capture?.close();
    for (const p of [...this.ports.keys()]) p.close('switch closed');
  }
}

