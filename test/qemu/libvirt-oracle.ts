// What libvirt XML a QEMU network must become, worked out independently of convert.ts: from
// the modern -netdev/-device form of a command line (what `convert` prints, itself checked
// against the real QEMU) and libvirt's domain format (https://libvirt.org/formatdomain.html,
// "Network interfaces" and "Host device assignment"). checkLibvirt parses the XML strictly
// and asserts, per NIC and in order: the interface type for its backend, <source>/<target>/
// <script>/<ip>/<driver> from the backend's options, <mac>, <model>, the PCI <address>, and
// the comments that stand in for what libvirt cannot express (hubs, backends without an
// <interface> type, NICs without a backend); per vfio-pci device a <hostdev>.
import assert from 'node:assert/strict';
import { parseQemuOpts } from '../../src/qemu/opts.ts';
import { findNicModel } from '../../src/qemu/model.ts';
import { comments, elements, parseXmlFragment, type XmlElement, type XmlNode } from '../helpers/xml.ts';

interface Opt { type: string; id: string; e: Map<string, string>; raw: string }

function opts(value: string, implied: string): Opt {
  const entries = parseQemuOpts(value, { impliedKey: implied }).entries;
  const e = new Map(entries.map((x) => [x.key, x.value]));
  return { type: e.get(implied) ?? '', id: e.get('id') ?? '', e, raw: value };
}

const hp = (v: string) => { const c = v.lastIndexOf(':'); return { host: v.slice(0, c), port: v.slice(c + 1) }; };

/** The attributes of the only child element `name` of el (asserted to be one). */
function only(el: XmlElement, name: string, what: string): Record<string, string> {
  const xs = elements(el.children, name);
  assert.equal(xs.length, 1, `${what}: one <${name}> in ${JSON.stringify(el)}`);
  return xs[0].attrs;
}

function none(el: XmlElement, name: string, what: string): void {
  assert.equal(elements(el.children, name).length, 0, `${what}: no <${name}>`);
}

/** The <address type='pci'> libvirt wants for QEMU's addr=SLOT[.FN] (hex). */
function pciAddress(addr: string | undefined): Record<string, string> | undefined {
  if (addr === undefined) return undefined;
  const m = /^(?:0x)?([0-9a-fA-F]{1,2})(?:\.([0-7]))?$/.exec(addr);
  if (!m) return undefined;
  return { type: 'pci', domain: '0x0000', bus: '0x00', slot: `0x${parseInt(m[1], 16).toString(16).padStart(2, '0')}`, function: `0x${m[2] ?? '0'}` };
}

/** Assert that `xml` is the libvirt form of `netdevArgs` (the argument list `convert` printed). */
export function checkLibvirt(netdevArgs: string[], xml: string): void {
  const nodes: XmlNode[] = parseXmlFragment(xml);
  const netdevs = new Map<string, Opt>();
  const nics: Opt[] = [];
  const hostdevs: Opt[] = [];
  const chardevs = new Map<string, Opt>();
  for (let i = 0; i < netdevArgs.length - 1; i++) {
    const a = netdevArgs[i];
    if (a === '-netdev') { const o = opts(netdevArgs[++i], 'type'); netdevs.set(o.id, o); }
    else if (a === '-chardev') { const o = opts(netdevArgs[++i], 'backend'); chardevs.set(o.id, o); }
    else if (a === '-device') {
      const o = opts(netdevArgs[++i], 'driver');
      if (o.type === 'vfio-pci') hostdevs.push(o);
      else if (findNicModel(o.type)) nics.push(o);
    }
  }
  const ifaces = elements(nodes, 'interface');
  const hds = elements(nodes, 'hostdev');
  assert.deepEqual(elements(nodes).map((x) => x.name).filter((n) => n !== 'interface' && n !== 'hostdev'), [], 'only <interface> and <hostdev> at the top');
  if (nics.length === 0 && hostdevs.length === 0) {
    // nothing, or QEMU's default NIC (a line without any network option)
    const plain = ifaces.length === 1 && ifaces[0].attrs.type === 'user' && ifaces[0].children.length === 1 && elements(ifaces[0].children, 'model').length === 1;
    assert.ok((ifaces.length === 0 && comments(nodes).join('|') === 'no network devices') || plain, `no NIC: ${xml}`);
    return;
  }
  assert.equal(ifaces.length, nics.length, `one <interface> per NIC:\n${xml}`);
  assert.equal(hds.length, hostdevs.length, `one <hostdev> per vfio-pci device:\n${xml}`);

  // the comments between the previous interface and this one belong to it
  const before: string[][] = [];
  let pending: string[] = [];
  for (const n of nodes) {
    if (n.kind === 'comment') pending.push(n.text);
    else if (n.name === 'interface') { before.push(pending); pending = []; }
  }

  nics.forEach((dev, k) => {
    const el = ifaces[k];
    const what = `NIC ${k} (${dev.raw})`;
    const inner = comments(el.children);
    let nd = dev.e.has('netdev') ? netdevs.get(dev.e.get('netdev')!) : undefined;
    if (nd?.type === 'hubport') {
      const hub = nd.e.get('hubid');
      const members = [...netdevs.values()].filter((x) => x.type === 'hubport' && x.e.get('hubid') === hub);
      const backs = members.filter((x) => x.e.has('netdev')).map((x) => netdevs.get(x.e.get('netdev')!)!);
      const nicsOnHub = members.length - backs.length;
      if (!(backs.length === 1 && nicsOnHub === 1)) {
        assert.ok(before[k].some((c) => c.includes(`hub ${hub}`) && c.includes('libvirt has no hubs')), `${what}: a comment that libvirt has no hubs: ${before[k].join(' | ')}`);
      }
      nd = backs[0];
    }
    const e = nd?.e ?? new Map<string, string>();
    // the type, and what goes with it
    let type: string;
    switch (nd?.type) {
      case undefined:
        type = 'user';
        assert.ok(before[k].some((c) => /has no backend/.test(c)), `${what}: the missing backend is said`);
        assert.deepEqual(only(el, 'link', what), { state: 'down' });
        break;
      case 'user': {
        type = 'user';
        const net = e.get('net');
        if (net) {
          const [addr, len] = net.split('/');
          assert.deepEqual(only(el, 'ip', what), { family: 'ipv4', address: addr, ...(len && /^\d+$/.test(len) ? { prefix: len } : {}) });
        } else none(el, 'ip', what);
        const lossy = [...e.keys()].filter((x) => x !== 'type' && x !== 'id' && x !== 'net');
        if (lossy.length) assert.ok(inner.some((c) => lossy.every((x) => c.includes(x))), `${what}: the user options libvirt lacks are named: ${inner.join(' | ')}`);
        break;
      }
      case 'tap': {
        const br = e.get('br');
        type = br && e.get('helper') ? 'bridge' : 'ethernet';
        if (type === 'bridge') assert.deepEqual(only(el, 'source', what), { bridge: br });
        const ifname = e.get('ifname');
        if (ifname) assert.deepEqual(only(el, 'target', what), { dev: ifname, managed: 'no' }); else none(el, 'target', what);
        for (const k2 of ['script', 'downscript'] as const) {
          const v = e.get(k2);
          if (v && v !== 'no') assert.deepEqual(only(el, k2, what), { path: v }); else none(el, k2, what);
        }
        if (e.has('fd') || e.has('fds')) assert.ok(inner.some((c) => /fd/.test(c)), `${what}: handed-over fds are said`);
        break;
      }
      case 'bridge':
        type = 'bridge';
        assert.deepEqual(only(el, 'source', what), { bridge: e.get('br') ?? 'br0' });
        break;
      case 'socket': {
        const key = ['listen', 'connect', 'mcast', 'udp'].find((x) => e.has(x))!;
        type = { listen: 'server', connect: 'client', mcast: 'mcast', udp: 'udp' }[key]!;
        const x = hp(e.get(key)!);
        const src = elements(el.children, 'source');
        assert.equal(src.length, 1, `${what}: one <source>`);
        assert.deepEqual(src[0].attrs, { ...(x.host || key !== 'listen' ? { address: x.host } : {}), port: x.port });
        if (key === 'udp') {
          const l = hp(e.get('localaddr') ?? ':');
          assert.deepEqual(only(src[0], 'local', what), { address: l.host, port: l.port });
        }
        break;
      }
      case 'vhost-user': {
        type = 'vhostuser';
        const path = chardevs.get(e.get('chardev') ?? '')?.e.get('path') ?? '/path/to/vhost-user.sock';
        assert.deepEqual(only(el, 'source', what), { type: 'unix', path, mode: 'client' });
        break;
      }
      case 'vhost-vdpa':
        type = 'vdpa';
        assert.deepEqual(only(el, 'source', what), { dev: e.get('vhostdev') ?? '/dev/vhost-vdpa-0' });
        break;
      case 'vde':
        type = 'vde';
        assert.deepEqual(only(el, 'source', what), e.get('sock') ? { dev: e.get('sock') } : {});
        break;
      default:
        // stream, dgram, l2tpv3, ...: no libvirt interface type; the comment gives the netdev
        type = 'user';
        assert.ok(before[k].some((c) => c.includes(`the ${nd!.type} backend has no libvirt`) && c.includes('qemu:commandline')), `${what}: ${nd!.type} is said to need <qemu:commandline>: ${before[k].join(' | ')}`);
    }
    assert.equal(el.attrs.type, type, `${what}: <interface type>\n${JSON.stringify(el)}`);
    assert.deepEqual(only(el, 'model', what), { type: findNicModel(dev.type)?.libvirt ?? dev.type });
    const mac = dev.e.get('mac');
    if (mac) assert.deepEqual(only(el, 'mac', what), { address: mac.toLowerCase().replace(/-/g, ':') }); else none(el, 'mac', what);
    const drv: Record<string, string> = {};
    if (nd?.type === 'tap' && e.has('vhost')) drv.name = /^(on|yes|true|y)$/.test(e.get('vhost')!) ? 'vhost' : 'qemu';
    if (e.has('queues')) drv.queues = e.get('queues')!;
    if (Object.keys(drv).length) assert.deepEqual(only(el, 'driver', what), drv); else none(el, 'driver', what);
    if (dev.e.has('vectors')) assert.ok(inner.some((c) => c.includes(`vectors=${dev.e.get('vectors')}`)), `${what}: vectors= is said`);
    const pa = pciAddress(dev.e.get('addr'));
    if (pa) assert.deepEqual(only(el, 'address', what), pa); else none(el, 'address', what);
  });

  hostdevs.forEach((h, k) => {
    const el = hds[k];
    const what = `hostdev ${k} (${h.raw})`;
    assert.deepEqual(el.attrs, { mode: 'subsystem', type: 'pci', managed: 'yes' });
    const src = elements(el.children, 'source');
    assert.equal(src.length, 1, what);
    const host = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/.exec(h.e.get('host') ?? '');
    if (host) assert.deepEqual(only(src[0], 'address', what), { domain: `0x${host[1] ?? '0000'}`, bus: `0x${host[2]}`, slot: `0x${host[3]}`, function: `0x${host[4]}` });
    else assert.ok(comments(src[0].children).some((c) => /host PCI address/.test(c)), `${what}: asks for the host PCI address`);
    const pa = pciAddress(h.e.get('addr'));
    if (pa) assert.deepEqual(only(el, 'address', what), pa); else none(el, 'address', what);
  });
}

/** The interface types (and 'hostdev') in an XML fragment, for coverage. */
export function shapesOf(xml: string): string[] {
  const nodes = parseXmlFragment(xml);
  return [...elements(nodes, 'interface').map((x) => x.attrs.type), ...elements(nodes, 'hostdev').map(() => 'hostdev')];
}
