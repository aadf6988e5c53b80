// The wiring of a command line once read: which NIC reaches which backend (directly or
// through QEMU's hubs), and the checks on it (unconnected NICs and backends, backends shared
// by several NICs, PCI slot clashes).
import { QEMU_DEFAULT_MAC } from './model.ts';
import type { Severity, Netdev, Nic, Analysis } from './analysis.ts';
import { parsePciAddr, pciKey, diag, type Ctx } from './analyze-context.ts';

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

export const SHARED = new Set(['tap', 'bridge', 'socket', 'stream', 'dgram', 'vde', 'vhost-user', 'vhost-vdpa', 'l2tpv3']);

export function checkTopology(ctx: Ctx): void {
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
