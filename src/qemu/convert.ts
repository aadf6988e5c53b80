// Rewrites a command line's network into modern -netdev/-device pairs, the
// -nic shorthand, or libvirt <interface>/<hostdev> XML. Everything that is not
// about networking passes through untouched and in order.
import { analyze } from './analyze.ts';
import type { Analysis, AnalyzeOptions, Diagnostic, Nic } from './analysis.ts';
import type { HostdevFacts } from './hostdev.ts';
import { parsePciAddr } from './analyze-context.ts';
import { MAX_LEGACY_NICS } from './options.ts';
import { hubMembers } from './topology.ts';
import { BACKENDS, findNicModel, legacyModelName } from './model.ts';
import { formatQemuOpts, parseBool, parseQemuOpts } from './opts.ts';

/** A backend in modern form. */
export interface NetdevOut {
  type: string;
  id: string;
  entries: Array<[string, string]>;
  /** The original -netdev argument, reused verbatim when nothing changed. */
  raw?: string;
  /** hubport's netdev= (must be emitted first). */
  link?: string;
  /** The id was made up by convert (the original had none), so -nic may leave it out. */
  generated?: boolean;
}

/** A NIC in modern form. */
export interface DeviceOut {
  model: string;
  netdev?: string;
  entries: Array<[string, string]>;
  raw?: string;
}

/** The network as a graph of modern netdevs and devices, in output order. */
export interface ModernNet {
  netdevs: NetdevOut[];
  devices: DeviceOut[];
  /** Kept when the line said -nic none / -net none and nothing else. */
  none: boolean;
  /** Index of the first token that belonged to the network (where the block goes). */
  insertAt: number;
  notes: string[];
}

export function netdevArg(n: NetdevOut): string {
  return n.raw ?? formatQemuOpts([['type', n.type], ['id', n.id], ...n.entries], 'type');
}

export function deviceArg(d: DeviceOut): string {
  return d.raw ?? formatQemuOpts([['driver', d.model], ...(d.netdev !== undefined ? [['netdev', d.netdev] as [string, string]] : []), ...d.entries], 'driver');
}

/** Error codes convert can repair on its way (the rest must be fixed by hand first). */
const REPAIRABLE = new Set(['vlan-removed', 'fancy-dash']);

export function blockingErrors(a: Analysis): Diagnostic[] {
  return a.diagnostics.filter((d) => d.severity === 'error' && !REPAIRABLE.has(d.code));
}

export function toModern(a: Analysis): ModernNet {
  const notes: string[] = [];
  const taken = new Set<string>([...a.netdevs.filter((n) => !n.autoId).map((n) => n.id), ...a.nics.filter((n) => n.id).map((n) => n.id!)]);
  const fresh = (base: string): string => {
    for (let i = 0; ; i++) {
      const id = `${base}${i}`;
      if (!taken.has(id)) { taken.add(id); return id; }
    }
  };
  const netdevs: NetdevOut[] = [];
  const devices: DeviceOut[] = [];
  const idMap = new Map<string, string>(); // analysis id -> output id
  const outId = (id: string): string => idMap.get(id) ?? id;

  const legacyDevice = (n: Nic, netdev: string): DeviceOut => {
    const entries: Array<[string, string]> = [];
    if (n.id) entries.push(['id', n.id]);
    if (n.mac) entries.push(['mac', n.mac]);
    // -net nic may write bus:slot; -device takes the slot only (bus= is separate).
    if (n.addr !== undefined) entries.push(['addr', n.addr.replace(/^.*:/, '')]);
    if (n.vectors !== undefined) {
      if (findNicModel(n.model)?.virtio) entries.push(['vectors', n.vectors]);
      else notes.push(`dropped vectors=${n.vectors} from ${n.name}: ${n.model} has no MSI-X vectors (QEMU ignored it too)`);
    }
    return { model: n.model, netdev, entries };
  };
  const backendOut = (nd: Analysis['netdevs'][number], id: string): NetdevOut => ({ type: nd.type, id, entries: nd.entries.map((e) => [e.key, e.value]), ...(nd.autoId ? { generated: true } : {}) });

  // Legacy hubs (old vlans): one NIC plus one backend becomes a direct pair; anything else keeps a hub.
  const legacyHubs = new Set<number>();
  for (const n of a.nics) if (n.origin === '-net' && n.netdev === undefined && n.hub !== undefined) legacyHubs.add(n.hub);
  for (const nd of a.netdevs) if (nd.origin === '-net' && nd.hub !== undefined) legacyHubs.add(nd.hub);
  const hubDevice = new Map<Nic, DeviceOut>();
  for (const hub of [...legacyHubs].sort((x, y) => x - y)) {
    const nics = a.nics.filter((n) => n.origin === '-net' && n.netdev === undefined && n.hub === hub);
    const backends = a.netdevs.filter((nd) => nd.origin === '-net' && nd.hub === hub);
    if (nics.length === 1 && backends.length === 1) {
      const id = backends[0].autoId ? fresh('net') : backends[0].id;
      idMap.set(backends[0].id, id);
      netdevs.push(backendOut(backends[0], id));
      hubDevice.set(nics[0], legacyDevice(nics[0], id));
      continue;
    }
    if (nics.length + backends.length > 1) notes.push(`hub ${hub} joins ${nics.length} NIC(s) and ${backends.length} backend(s), so it stays a hub of hubport netdevs`);
    for (const b of backends) {
      const id = b.autoId ? fresh(`hub${hub}${b.type.replace(/-/g, '')}`) : b.id;
      idMap.set(b.id, id);
      netdevs.push(backendOut(b, id));
      netdevs.push({ type: 'hubport', id: fresh(`hub${hub}port`), entries: [['hubid', String(hub)], ['netdev', id]], link: id });
    }
    for (const n of nics) {
      const port = fresh(`hub${hub}port`);
      netdevs.push({ type: 'hubport', id: port, entries: [['hubid', String(hub)]] });
      hubDevice.set(n, legacyDevice(n, port));
    }
  }

  // -netdev as written; -nic split into its netdev and device.
  for (const nd of a.netdevs) {
    if (nd.origin === '-netdev') {
      netdevs.push({ type: nd.type, id: nd.id, entries: nd.entries.map((e) => [e.key, e.value]), ...(nd.raw ? { raw: nd.raw } : {}), ...(nd.link ? { link: nd.link } : {}) });
    } else if (nd.origin === '-nic') {
      const id = nd.autoId ? fresh('nic') : nd.id;
      idMap.set(nd.id, id);
      netdevs.push(backendOut(nd, id));
    }
  }
  for (const n of [...a.nics].sort((x, y) => x.pos - y.pos)) {
    if (n.origin === '-device') devices.push({ model: n.model, ...(n.netdev !== undefined ? { netdev: n.netdev } : {}), entries: [], ...(n.raw ? { raw: n.raw } : {}) });
    else if (n.origin === '-nic') devices.push({ model: n.model, netdev: outId(n.netdev!), entries: n.mac ? [['mac', n.mac]] : [] });
    else if (n.netdev !== undefined) devices.push(legacyDevice(n, n.netdev));
    else devices.push(hubDevice.get(n)!);
  }
  // Order netdevs so a hubport's netdev= comes before it.
  const ordered: NetdevOut[] = [];
  const seen = new Set<string>();
  const put = (n: NetdevOut): void => {
    if (seen.has(n.id)) return;
    if (n.link) { const t = netdevs.find((x) => x.id === n.link); if (t) put(t); }
    seen.add(n.id);
    ordered.push(n);
  };
  netdevs.forEach(put);
  const firstNet = a.tokens.find((t) => t.kind === 'net' && (t.name !== 'device' || isNetworkDevice(t.value)));
  return { netdevs: ordered, devices, none: a.noneNet && !a.netdevs.length && !a.nics.length, insertAt: firstNet ? firstNet.index : -1, notes };
}

function isNetworkDevice(value: string): boolean {
  const drv = parseQemuOpts(value, { impliedKey: 'driver' }).entries.find((e) => e.key === 'driver')?.value ?? '';
  return !!findNicModel(drv);
}

/** Rebuild the whole command line with a new network block in place of the old network options. */
export function assemble(a: Analysis, block: string[], insertAt: number): string[] {
  const out: string[] = [];
  let placed = false;
  const place = () => { if (!placed) { out.push(...block); placed = true; } };
  for (const t of a.tokens) {
    if (t.kind === 'missing') continue;
    if (t.kind === 'net' && (t.name !== 'device' || isNetworkDevice(t.value))) {
      if (t.index >= insertAt) place();
      continue;
    }
    if (t.kind === 'other') {
      if (t.positional && /^(netdev|model|mac|macaddr|id|vlan)=/.test(t.args[0]) && REPAIR_STRAY) continue;
      out.push(...(t.dash && !t.positional ? [`-${t.args[0].slice(1)}`, ...t.args.slice(1)] : t.args));
      continue;
    }
    out.push(t.name === 'device' ? '-device' : `-${t.name}`, t.value);
  }
  place();
  return out;
}

/** Stray key=value words are left in place: they are not networking as far as QEMU is concerned. */
const REPAIR_STRAY = false;

function modernBlock(m: ModernNet): string[] {
  const block: string[] = [];
  if (m.none) return ['-nic', 'none'];
  // Pair each device with the netdevs it needs right before it, for readability.
  const emitted = new Set<string>();
  const emit = (id: string | undefined) => {
    if (id === undefined) return;
    const nd = m.netdevs.find((n) => n.id === id);
    if (!nd || emitted.has(id)) return;
    for (const dep of m.netdevs) if (dep.type === 'hubport' && dep.id === id && dep.link) emit(dep.link);
    // A hubport device pulls in the whole hub so backends show up next to it.
    if (nd.type === 'hubport') {
      const hubid = nd.entries.find(([k]) => k === 'hubid')?.[1];
      for (const other of m.netdevs) {
        if (other.type === 'hubport' && other.link && other.entries.find(([k]) => k === 'hubid')?.[1] === hubid) {
          emit(other.link);
          if (!emitted.has(other.id)) { emitted.add(other.id); block.push('-netdev', netdevArg(other)); }
        }
      }
    }
    if (nd.link) emit(nd.link);
    if (emitted.has(id)) return;
    emitted.add(id);
    block.push('-netdev', netdevArg(nd));
  };
  for (const d of m.devices) {
    emit(d.netdev);
    block.push('-device', deviceArg(d));
  }
  for (const n of m.netdevs) emit(n.id);
  return block;
}

export interface ConvertOutput {
  ok: boolean;
  to: 'netdev' | 'nic' | 'libvirt';
  args?: string[];
  xml?: string;
  notes: string[];
  diagnostics: Diagnostic[];
}

/** `hostdevs`: what the host knows of each vfio-pci host= (qemu/hostdev.ts): VFs become <interface type='hostdev'> */
export function convert(argv: string[], to: 'netdev' | 'nic' | 'libvirt' = 'netdev', opts: AnalyzeOptions & { hostdevs?: Map<string, HostdevFacts> } = {}): ConvertOutput {
  const a = analyze(argv, opts);
  const blocking = blockingErrors(a);
  if (blocking.length) return { ok: false, to, notes: [], diagnostics: a.diagnostics };
  const m = toModern(a);
  if (to === 'libvirt') return { ok: true, to, xml: toLibvirt(a, m, opts.hostdevs), notes: m.notes, diagnostics: a.diagnostics };
  const block = to === 'nic' ? nicBlock(m) : modernBlock(m);
  return { ok: true, to, args: assemble(a, block, m.insertAt), notes: m.notes, diagnostics: a.diagnostics };
}

/** -nic where it loses nothing; other pairs stay -netdev/-device. */
function nicBlock(m: ModernNet): string[] {
  if (m.none) return ['-nic', 'none'];
  const asNic = new Set<DeviceOut>();
  for (const d of m.devices) {
    const why = asNic.size >= MAX_LEGACY_NICS ? `-nic can create at most ${MAX_LEGACY_NICS} NICs` : nicBlocker(m, d);
    if (why) m.notes.push(`kept ${d.model}${d.netdev ? ` (netdev ${d.netdev})` : ''} as -netdev/-device: ${why}`);
    else asNic.add(d);
  }
  const rest: ModernNet = { ...m, devices: m.devices.filter((d) => !asNic.has(d)), netdevs: m.netdevs.filter((n) => ![...asNic].some((d) => d.netdev === n.id)) };
  const block: string[] = [];
  for (const d of m.devices) {
    if (!asNic.has(d)) continue;
    const nd = m.netdevs.find((n) => n.id === d.netdev)!;
    const dev = parseDevice(d);
    const entries: Array<[string, string]> = [['type', nd.type]];
    if (!nd.generated) entries.push(['id', nd.id]);
    entries.push(...nd.entries, ['model', dev.model]);
    const mac = dev.entries.find(([k]) => k === 'mac');
    if (mac) entries.push(mac);
    block.push('-nic', formatQemuOpts(entries, 'type'));
  }
  block.push(...modernBlock(rest));
  return block;
}

function parseDevice(d: DeviceOut): { model: string; entries: Array<[string, string]> } {
  if (!d.raw) return { model: d.model, entries: d.entries };
  const p = parseQemuOpts(d.raw, { impliedKey: 'driver' });
  return { model: d.model, entries: p.entries.filter((e) => e.key !== 'driver' && e.key !== 'netdev').map((e) => [e.key, e.value]) };
}

function nicBlocker(m: ModernNet, d: DeviceOut): string | undefined {
  if (d.netdev === undefined) return 'it has no netdev';
  const nd = m.netdevs.find((n) => n.id === d.netdev);
  if (!nd) return 'its netdev is missing';
  if (nd.type === 'hubport') return 'it sits on a hub';
  const spec = BACKENDS[nd.type];
  if (!spec || spec.keyval) return `-nic can't express the ${nd.type} backend's nested options`;
  if (m.netdevs.some((n) => n.link === nd.id)) return 'its netdev is shared through a hub';
  if (nd.raw?.trimStart().startsWith('{')) return 'its -netdev is JSON';
  if (d.raw?.trimStart().startsWith('{')) return 'its -device is JSON';
  if (!legacyModelName(d.model)) return `-nic can't create ${d.model}`;
  const mac = parseDevice(d).entries.find(([k]) => k === 'mac')?.[1];
  if (mac && parseInt(mac.slice(0, 2), 16) & 1) return '-nic refuses multicast MACs';
  const lost = parseDevice(d).entries.filter(([k]) => k !== 'mac').map(([k]) => k);
  if (lost.length) return `-nic has no place for ${lost.map((k) => k + '=').join(', ')}`;
  return undefined;
}

// ---- libvirt -------------------------------------------------------------

function xmlEsc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

function pciAddressXml(addr: string | undefined): string | undefined {
  if (addr === undefined) return undefined;
  const p = parsePciAddr(addr);
  if (!p) return undefined;
  return `<address type='pci' domain='0x0000' bus='0x00' slot='0x${p.slot.toString(16).padStart(2, '0')}' function='0x${p.fn}'/>`;
}

function hostPciXml(host: string): string | undefined {
  const m = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/.exec(host);
  if (!m) return undefined;
  return `<address domain='0x${m[1] ?? '0000'}' bus='0x${m[2]}' slot='0x${m[3]}' function='0x${m[4]}'/>`;
}

function entriesMap(entries: Array<[string, string]>): Map<string, string> {
  return new Map(entries);
}

function chardevPath(a: Analysis, id: string): string | undefined {
  for (const t of a.tokens) {
    if (t.kind === 'other' && t.name === 'chardev') {
      const e = parseQemuOpts(t.args[1] ?? '', { impliedKey: 'backend' }).entries;
      if (e.some((x) => x.key === 'id' && x.value === id)) return e.find((x) => x.key === 'path')?.value;
    }
  }
  return undefined;
}

export function toLibvirt(a: Analysis, m: ModernNet, hostdevs: Map<string, HostdevFacts> = new Map()): string {
  const out: string[] = [];
  for (const d of m.devices) {
    const dev = parseDevice(d);
    const de = entriesMap(dev.entries);
    let nd = m.netdevs.find((n) => n.id === d.netdev);
    const lines: string[] = [];
    if (nd?.type === 'hubport') {
      const hubid = entriesMap(nd.entries).get('hubid');
      const backs = m.netdevs.filter((n) => n.type === 'hubport' && n.link && entriesMap(n.entries).get('hubid') === hubid).map((n) => m.netdevs.find((x) => x.id === n.link)!);
      const nicsOnHub = m.netdevs.filter((n) => n.type === 'hubport' && !n.link && entriesMap(n.entries).get('hubid') === hubid).length;
      if (backs.length === 1 && nicsOnHub === 1) nd = backs[0];
      else {
        lines.push(`<!-- ${dev.model} sits on QEMU hub ${hubid} with ${backs.length} backend(s) and ${nicsOnHub} NIC(s); libvirt has no hubs, so this needs <qemu:commandline> or a libvirt network -->`);
        nd = backs[0];
      }
    }
    const e = nd ? entriesMap(nd.entries) : new Map<string, string>();
    let type = 'user';
    const inner: string[] = [];
    switch (nd?.type) {
      case undefined:
        type = 'null';
        lines.push(`<!-- ${dev.model} has no backend; libvirt needs one (type='user' shown, link down) -->`);
        type = 'user';
        inner.push(`<link state='down'/>`);
        break;
      case 'user': {
        type = 'user';
        const net = e.get('net');
        if (net) {
          const [addr, len] = net.split('/');
          inner.push(`<ip family='ipv4' address='${xmlEsc(addr)}'${len && /^\d+$/.test(len) ? ` prefix='${len}'` : ''}/>`);
        }
        const lossy = [...e.keys()].filter((k) => k !== 'net');
        if (lossy.length) inner.push(`<!-- user-mode options without a libvirt equivalent for slirp: ${xmlEsc(lossy.join(', '))}; libvirt's passt backend (<backend type='passt'/> with <portForward>) covers hostfwd -->`);
        break;
      }
      case 'tap': {
        type = 'ethernet';
        const ifname = e.get('ifname');
        if (ifname) inner.push(`<target dev='${xmlEsc(ifname)}' managed='no'/>`);
        const script = e.get('script');
        if (script && script !== 'no') inner.push(`<script path='${xmlEsc(script)}'/>`);
        const down = e.get('downscript');
        if (down && down !== 'no') inner.push(`<downscript path='${xmlEsc(down)}'/>`);
        if (e.get('br') && e.get('helper')) { type = 'bridge'; inner.unshift(`<source bridge='${xmlEsc(e.get('br')!)}'/>`); }
        if (e.has('fd') || e.has('fds')) inner.push('<!-- fd=/fds= are handed over by the caller; libvirt opens the tap itself -->');
        break;
      }
      case 'bridge':
        type = 'bridge';
        inner.push(`<source bridge='${xmlEsc(e.get('br') ?? 'br0')}'/>`);
        break;
      case 'socket': {
        const hp = (v: string) => { const c = v.lastIndexOf(':'); return { host: v.slice(0, c), port: v.slice(c + 1) }; };
        if (e.has('listen')) { type = 'server'; const x = hp(e.get('listen')!); inner.push(`<source${x.host ? ` address='${xmlEsc(x.host)}'` : ''} port='${xmlEsc(x.port)}'/>`); }
        else if (e.has('connect')) { type = 'client'; const x = hp(e.get('connect')!); inner.push(`<source address='${xmlEsc(x.host)}' port='${xmlEsc(x.port)}'/>`); }
        else if (e.has('mcast')) { type = 'mcast'; const x = hp(e.get('mcast')!); inner.push(`<source address='${xmlEsc(x.host)}' port='${xmlEsc(x.port)}'/>`); }
        else if (e.has('udp')) {
          type = 'udp'; const x = hp(e.get('udp')!); const l = hp(e.get('localaddr') ?? ':');
          inner.push(`<source address='${xmlEsc(x.host)}' port='${xmlEsc(x.port)}'>`, `  <local address='${xmlEsc(l.host)}' port='${xmlEsc(l.port)}'/>`, '</source>');
        }
        break;
      }
      case 'vhost-user': {
        type = 'vhostuser';
        const path = chardevPath(a, e.get('chardev') ?? '') ?? '/path/to/vhost-user.sock';
        inner.push(`<source type='unix' path='${xmlEsc(path)}' mode='client'/>`);
        break;
      }
      case 'vhost-vdpa':
        type = 'vdpa';
        inner.push(`<source dev='${xmlEsc(e.get('vhostdev') ?? '/dev/vhost-vdpa-0')}'/>`);
        break;
      case 'vde':
        type = 'vde';
        inner.push(`<source${e.get('sock') ? ` dev='${xmlEsc(e.get('sock')!)}'` : ''}/>`);
        break;
      default: {
        type = 'user';
        if (nd) lines.push(`<!-- the ${nd.type} backend has no libvirt <interface> type; use <qemu:commandline> with: -netdev ${xmlEsc(netdevArg(nd))} -->`);
      }
    }
    const mac = de.get('mac');
    const model = findNicModel(dev.model);
    const body: string[] = [];
    if (mac) body.push(`<mac address='${xmlEsc(mac.toLowerCase().replace(/-/g, ':'))}'/>`);
    body.push(...inner);
    body.push(`<model type='${xmlEsc(model?.libvirt ?? dev.model)}'/>`);
    const drv: string[] = [];
    if (nd?.type === 'tap' && e.has('vhost')) drv.push(`name='${parseBool(e.get('vhost')!) ? 'vhost' : 'qemu'}'`);
    if (e.has('queues')) drv.push(`queues='${xmlEsc(e.get('queues')!)}'`);
    if (drv.length) body.push(`<driver ${drv.join(' ')}/>`);
    if (de.has('vectors')) body.push(`<!-- vectors=${xmlEsc(de.get('vectors')!)}: libvirt sizes MSI-X vectors itself -->`);
    const pa = pciAddressXml(de.get('addr'));
    if (pa) body.push(pa);
    lines.push(`<interface type='${type}'>`, ...body.map((l) => `  ${l}`), '</interface>');
    out.push(...lines);
  }
  for (const h of a.hostdevs) {
    const src = h.host ? hostPciXml(h.host) : undefined;
    const vf = h.host ? hostdevs.get(h.host)?.vf : undefined;
    if (vf && src) {
      // an SR-IOV VF: libvirt sets its MAC and VLAN through the PF, as qnet's VF pool does
      out.push(`<interface type='hostdev' managed='yes'>`, '  <source>', `    ${src.replace('<address ', "<address type='pci' ")}`, '  </source>');
      if (vf.mac) out.push(`  <mac address='${xmlEsc(vf.mac)}'/>`);
      if (vf.vlan) out.push('  <vlan>', `    <tag id='${vf.vlan}'/>`, '  </vlan>');
      out.push(`  <driver name='vfio'/>`);
      const pa = pciAddressXml(h.addr);
      if (pa) out.push(`  ${pa}`);
      out.push(`</interface>`);
      continue;
    }
    out.push(`<hostdev mode='subsystem' type='pci' managed='yes'>`, '  <source>', `    ${src ?? `<!-- sysfsdev=${xmlEsc(h.sysfsdev ?? '?')}: give the host PCI address -->`}`, '  </source>');
    const pa = pciAddressXml(h.addr);
    if (pa) out.push(`  ${pa}`);
    out.push('</hostdev>');
  }
  if (!out.length) out.push(a.noneNet ? '<!-- no network devices -->' : a.defaultNet ? `<interface type='user'>\n  <model type='${a.machine.defaultNic}'/>\n</interface>` : '<!-- no network devices -->');
  return out.join('\n') + '\n';
}

export { hubMembers };
