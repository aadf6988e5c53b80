// Plain-language description of what a command line's network builds.
import { analyze } from './analyze.ts';
import type { Analysis, AnalyzeOptions, Netdev, Nic } from './analysis.ts';
import { parsePciAddr } from './analyze-context.ts';
import { hubIds, hubMembers, reach } from './topology.ts';
import { BACKENDS, QEMU_DEFAULT_MAC, findNicModel } from './model.ts';
import { parseBool } from './opts.ts';
import { parseUserNetdev } from './user-options.ts';

export interface NicExplained {
  name: string;
  model: string;
  modelDesc: string;
  mac: string;
  macAssigned: boolean;
  pci: string;
  hub?: number;
  backends: string[];
  text: string;
}

export interface Explanation {
  machine: string;
  nics: NicExplained[];
  backends: Array<{ id: string; type: string; text: string }>;
  hubs: Array<{ hub: number; nics: string[]; backends: string[] }>;
  text: string;
}

function get(nd: Netdev, k: string): string | undefined {
  let v: string | undefined;
  for (const e of nd.entries) if (e.key === k) v = e.value;
  return v;
}

function sockAddr(nd: Netdev, g: string): string {
  const t = get(nd, `${g}.type`);
  if (t === 'inet') return `${get(nd, `${g}.host`) || '*'}:${get(nd, `${g}.port`)}`;
  if (t === 'unix') return `unix:${get(nd, `${g}.path`)}`;
  if (t === 'fd') return `fd ${get(nd, `${g}.str`)}`;
  return '?';
}

/** One sentence on what a backend does. */
export function describeBackend(nd: Netdev): string {
  switch (nd.type) {
    case 'user': {
      const c = nd.user ?? (() => { const r = parseUserNetdev(nd.entries.map((e) => `${e.key}=${e.value.replace(/,/g, ',,')}`).join(',')); return r.ok ? r.config : undefined; })();
      if (!c) return 'user-mode NAT (invalid options)';
      const parts: string[] = [];
      if (c.ipv4) parts.push(`user-mode NAT on ${c.net}/${c.prefixLength ?? c.netmask}, guest reaches host loopback at ${c.host}, DNS at ${c.dns}, DHCP from ${c.dhcpstart}`);
      else parts.push('user-mode NAT (IPv4 off)');
      if (c.ipv6) parts.push(`IPv6 ${c.ipv6Prefix}/${c.ipv6PrefixLength}`);
      if (c.restrict) parts.push('restricted: no traffic to the host or outside except forwarded ports');
      for (const f of c.hostfwd) {
        parts.push(`host ${f.proto === 'udp' ? 'UDP ' : ''}port ${f.hostPort}${f.hostAddr ? ` on ${f.hostAddr}` : ''} forwarded to guest ${f.guest ? `${f.guest}:` : ''}${f.guestPort}`);
      }
      for (const g of c.guestfwd) {
        const tgt = g.target.kind === 'cmd' ? `command '${g.target.command}'` : g.target.kind === 'tcp' ? `TCP ${g.target.host}:${g.target.port}` : g.target.kind === 'unix' ? `UNIX socket ${g.target.path}` : `chardev ${g.target.spec}`;
        parts.push(`guest connections to ${g.server || '*'}:${g.port} go to ${tgt}`);
      }
      if (c.tftp) parts.push(`TFTP serves ${c.tftp}${c.bootfile ? `, boot file ${c.bootfile}` : ''}`);
      else if (c.bootfile) parts.push(`BOOTP file ${c.bootfile}`);
      if (c.smb) parts.push(`SMB share of ${c.smb} at ${c.smbserver ?? '10.0.2.4'} (needs smbd)`);
      if (c.hostname) parts.push(`DHCP host name ${c.hostname}`);
      if (c.domainname) parts.push(`domain ${c.domainname}`);
      if (c.dnssearch.length) parts.push(`DNS search ${c.dnssearch.join(' ')}`);
      return parts.join('; ');
    }
    case 'tap': {
      if (get(nd, 'fd') !== undefined) return `host TAP interface already opened as fd ${get(nd, 'fd')}`;
      if (get(nd, 'fds') !== undefined) return `multiqueue host TAP, fds ${get(nd, 'fds')}`;
      if (get(nd, 'helper') !== undefined) return `host TAP interface created by ${get(nd, 'helper')}${get(nd, 'br') ? ` and added to bridge ${get(nd, 'br')}` : ''}`;
      const script = get(nd, 'script') ?? '/etc/qemu-ifup';
      const down = get(nd, 'downscript') ?? '/etc/qemu-ifdown';
      const parts = [`host TAP interface ${get(nd, 'ifname') ?? '(name picked by the kernel, tapN)'}`];
      parts.push(script === 'no' ? 'no set-up script' : `set up by ${script}`);
      parts.push(down === 'no' ? 'no tear-down script' : `torn down by ${down}`);
      if (get(nd, 'vhost') !== undefined && parseBool(get(nd, 'vhost')!)) parts.push('vhost-net in the kernel');
      if (get(nd, 'queues')) parts.push(`${get(nd, 'queues')} queues`);
      parts.push('needs root or CAP_NET_ADMIN');
      return parts.join('; ');
    }
    case 'bridge':
      return `host TAP interface added to bridge ${get(nd, 'br') ?? 'br0'} by ${get(nd, 'helper') ?? 'qemu-bridge-helper'} (the bridge must be listed in /etc/qemu/bridge.conf); the guest is on the bridge's LAN`;
    case 'socket':
      if (get(nd, 'listen') !== undefined) return `waits for one peer QEMU to connect to TCP ${get(nd, 'listen')} and exchanges Ethernet frames with it`;
      if (get(nd, 'connect') !== undefined) return `connects to a peer QEMU at TCP ${get(nd, 'connect')} and exchanges Ethernet frames with it`;
      if (get(nd, 'mcast') !== undefined) return `joins UDP multicast group ${get(nd, 'mcast')}: every VM in the group shares one Ethernet segment`;
      if (get(nd, 'udp') !== undefined) return `sends Ethernet frames as UDP to ${get(nd, 'udp')} from ${get(nd, 'localaddr')}`;
      return `socket already opened as fd ${get(nd, 'fd')}`;
    case 'stream': {
      const server = parseBool(get(nd, 'server') ?? 'off');
      return server ? `listens on ${sockAddr(nd, 'addr')} for one peer and exchanges Ethernet frames over the stream` : `connects to ${sockAddr(nd, 'addr')} and exchanges Ethernet frames over the stream (a qnet switch or user network can serve it)`;
    }
    case 'dgram':
      return `sends Ethernet frames as datagrams from ${sockAddr(nd, 'local')}${get(nd, 'remote.type') ? ` to ${sockAddr(nd, 'remote')}` : ''}`;
    case 'hubport':
      return `port on QEMU hub ${get(nd, 'hubid')}${nd.link ? ` wired to netdev ${nd.link}` : ''}`;
    case 'vhost-user':
      return `virtio rings served by an external vhost-user process on chardev ${get(nd, 'chardev')}`;
    case 'vhost-vdpa':
      return `vDPA device ${get(nd, 'vhostdev') ?? `fd ${get(nd, 'vhostfd')}`}`;
    case 'l2tpv3':
      return `L2TPv3 pseudowire from ${get(nd, 'src')} to ${get(nd, 'dst')}`;
    case 'vde':
      return `VDE switch at ${get(nd, 'sock') ?? '/tmp/vde.ctl'}`;
    default:
      return BACKENDS[nd.type]?.desc ?? nd.type;
  }
}

/** PCI slot QEMU will likely pick (first free one, in creation order); an estimate. */
function assignSlots(a: Analysis): Map<Nic, string> {
  const used = new Set<number>(a.machine.reserved.filter((r) => r.endsWith('.0')).map((r) => parseInt(r, 16)));
  if (!a.nodefaults && a.machine.family !== 'microvm') used.add(a.machine.family === 'q35' ? 1 : 2); // default VGA
  for (const n of a.nics) { const p = n.addr !== undefined ? parsePciAddr(n.addr) : undefined; if (p) used.add(p.slot); }
  const out = new Map<Nic, string>();
  // -nic and -net NICs are created with the machine, -device ones afterwards.
  const order = [...a.nics.filter((n) => n.origin !== '-device'), ...a.nics.filter((n) => n.origin === '-device')];
  for (const n of order) {
    const model = findNicModel(n.model);
    if (model?.bus !== 'PCI' || (n.bus !== undefined && n.bus !== a.machine.pciBus)) { out.set(n, model?.bus === 'PCI' ? `on bus ${n.bus}` : `${model?.bus ?? '?'} bus`); continue; }
    const p = n.addr !== undefined ? parsePciAddr(n.addr) : undefined;
    if (p) { out.set(n, `00:${p.slot.toString(16).padStart(2, '0')}.${p.fn}`); continue; }
    let s = 1;
    while (used.has(s) && s < 32) s++;
    used.add(s);
    out.set(n, `00:${s.toString(16).padStart(2, '0')}.0 (probably; picked by QEMU)`);
  }
  return out;
}

export function explainAnalysis(a: Analysis): Explanation {
  const slots = assignSlots(a);
  const lines: string[] = [];
  const macFree = (() => { let i = 0x56; const taken = new Set(a.nics.map((n) => n.mac)); return () => { for (;;) { const m = `52:54:00:12:34:${(i++).toString(16)}`; if (!taken.has(m)) return m; } }; })();
  const machine = a.machineType ?? 'pc (default)';
  lines.push(`Machine ${machine}: a bare -nic or -net nic gets ${a.machine.defaultNic}.`);
  if (a.defaultNet) lines.push(`No network options: QEMU adds its default user-mode NIC (${a.machine.defaultNic}, MAC ${QEMU_DEFAULT_MAC}, NAT on 10.0.2.0/24, guest reaches host loopback at 10.0.2.2).`);
  if (a.noneNet && !a.nics.length) lines.push('Networking is switched off (none).');
  const nics: NicExplained[] = [];
  for (const n of a.nics) {
    const model = findNicModel(n.model);
    const mac = n.mac ?? macFree();
    const r = reach(a, n);
    const head = `NIC ${n.name}: ${n.model}${model ? ` (${model.desc})` : ''}, MAC ${mac}${n.mac ? '' : ' (assigned by QEMU)'}, PCI ${slots.get(n) ?? '-'}${n.vectors !== undefined ? `, ${n.vectors} MSI-X vectors${n.vectors === '0' ? ' (MSI-X off)' : ''}` : ''}`;
    const body: string[] = [];
    if (r.hub !== undefined) {
      body.push(`on QEMU hub ${r.hub}${r.others.length ? ` together with ${r.others.map((o) => o.name).join(', ')} (they see each other's traffic)` : ''}`);
    }
    if (!r.backends.length) body.push(n.netdev === undefined && n.hub === undefined ? 'not connected to anything (no netdev): the guest sees a NIC with no cable' : 'reaches no host network');
    for (const b of r.backends) body.push(`reaches ${b.origin === '-netdev' ? `netdev ${b.id}` : `a ${b.origin} ${b.type} backend`} (${b.type}): ${describeBackend(b)}`);
    const text = `${head}\n  ${body.join('\n  ')}`;
    lines.push(text);
    nics.push({ name: n.name, model: n.model, modelDesc: model?.desc ?? '', mac, macAssigned: !n.mac, pci: slots.get(n) ?? '', ...(r.hub !== undefined ? { hub: r.hub } : {}), backends: r.backends.map((b) => b.id), text });
  }
  const reached = new Set(a.nics.flatMap((n) => reach(a, n).backends.map((b) => b.id)));
  const backends = a.netdevs.filter((nd) => nd.type !== 'hubport').map((nd) => ({ id: nd.id, type: nd.type, text: describeBackend(nd) }));
  for (const nd of a.netdevs) {
    if (nd.type !== 'hubport' && !reached.has(nd.id)) lines.push(`Backend ${nd.origin === '-netdev' ? nd.id : nd.source} (${nd.type}) is not reached by any NIC: ${describeBackend(nd)}`);
  }
  for (const h of a.hostdevs) lines.push(`Host PCI device ${h.host ?? h.sysfsdev} passed through with vfio-pci${h.addr ? ` at guest slot ${h.addr}` : ''}: the guest drives the real NIC, QEMU is not in the data path.`);
  const hubs = hubIds(a).map((h) => { const m = hubMembers(a, h); return { hub: h, nics: m.nics.map((n) => n.name), backends: m.backends.map((b) => b.id) }; });
  return { machine, nics, backends, hubs, text: lines.join('\n') + '\n' };
}

export function explain(argv: string[], opts: AnalyzeOptions = {}): Explanation & { analysis: Analysis } {
  const a = analyze(argv, opts);
  return { ...explainAnalysis(a), analysis: a };
}
