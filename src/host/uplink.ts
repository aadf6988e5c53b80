// Bridge mode's uplink: enslave the host's NIC to the bridge and move its addresses and routes
// to the bridge (what seed 000 §2.3 does by hand with brctl addif, ifconfig NIC 0 and dhclient
// BR), and put everything back on stop.
//
// Order, so the host keeps its LAN connectivity but for a moment: the bridge is created by the
// caller with the NIC's MAC and MTU (the LAN's ARP caches and DHCP server see no change); then
// in one `ip -batch` process: NIC joins the bridge, the addresses are added to the bridge and
// deleted from the NIC (which takes the NIC's routes with them), and the NIC's non-kernel
// routes (default route, static routes) are re-added through the bridge. Link-local IPv6
// addresses and the kernel's connected routes are not moved: the kernel makes them anew.
//
// The record returned is what is written to the state directory; moveBack() replays it in
// reverse with `ip -force -batch` (every step is tried even if one fails, e.g. after a crash
// left things half done) and reports what could not be restored.
import { addrArgs, addrs, ipBatch, link, routeArgs, routes, type AddrInfo, type RouteInfo } from './ip.ts';
import type { Runner } from './run.ts';

export interface UplinkRecord {
  nic: string;
  bridge: string;
  mac: string;
  mtu: number;
  addrs: AddrInfo[];
  routes4: RouteInfo[];
  routes6: RouteInfo[];
}

const movable = (a: AddrInfo): boolean => !(a.family === 'inet6' && a.scope === 'link');
const movableRoute = (rt: RouteInfo): boolean => rt.protocol !== 'kernel' && !rt.dst.startsWith('fe80:') && !rt.dst.startsWith('ff00:') && rt.type !== 'multicast';

/** What would move: the NIC's MAC, MTU, addresses and routes (nothing is changed). */
export async function readUplink(r: Runner, nic: string, bridge: string): Promise<UplinkRecord> {
  const l = await link(r, nic);
  if (!l) throw new Error(`uplink '${nic}' does not exist on ${r.where}`);
  if (l.kind === 'bridge') throw new Error(`uplink '${nic}' is itself a bridge; name it as the network's bridge: instead of as its uplink:`);
  if (l.master && l.master !== bridge) throw new Error(`uplink '${nic}' is already a port of bridge ${l.master}`);
  return {
    nic, bridge, mac: l.address ?? '', mtu: l.mtu,
    addrs: (await addrs(r, nic)).filter(movable),
    routes4: (await routes(r, nic, 4)).filter(movableRoute),
    routes6: (await routes(r, nic, 6)).filter(movableRoute),
  };
}

function cidr(a: AddrInfo): string { return `${a.local}/${a.prefixlen}`; }

/** Enslave the NIC and move its addresses and routes to the (existing) bridge. */
export async function moveToBridge(r: Runner, rec: UplinkRecord): Promise<void> {
  const cmds: string[][] = [['link', 'set', 'dev', rec.nic, 'master', rec.bridge], ['link', 'set', 'dev', rec.nic, 'up']];
  for (const a of rec.addrs) cmds.push(addrArgs(a, rec.bridge));
  for (const a of rec.addrs) cmds.push(['addr', 'del', cidr(a), 'dev', rec.nic]);
  for (const rt of rec.routes4) cmds.push(routeArgs(rt, rec.bridge, 4));
  for (const rt of rec.routes6) cmds.push(routeArgs(rt, rec.bridge, 6));
  await ipBatch(r, cmds);
}

/**
 * Put the NIC back as it was: off the bridge, its addresses and routes on it again (and off the
 * bridge). Best effort: every step is tried; returns the problems (empty when all is back).
 */
export async function moveBack(r: Runner, rec: UplinkRecord): Promise<string[]> {
  const problems: string[] = [];
  const nic = await link(r, rec.nic);
  if (!nic) return [`uplink ${rec.nic} is gone; nothing to move back`];
  const cmds: string[][] = [];
  if (nic.master) cmds.push(['link', 'set', 'dev', rec.nic, 'nomaster']);
  cmds.push(['link', 'set', 'dev', rec.nic, 'up']);
  const br = await link(r, rec.bridge);
  if (br) for (const a of rec.addrs) cmds.push(['addr', 'del', cidr(a), 'dev', rec.bridge]);
  for (const a of rec.addrs) cmds.push(addrArgs(a, rec.nic).map((x) => (x === 'add' ? 'replace' : x)));
  for (const rt of rec.routes4) cmds.push(routeArgs(rt, rec.nic, 4));
  for (const rt of rec.routes6) cmds.push(routeArgs(rt, rec.nic, 6));
  const input = cmds.map((c) => c.join(' ')).join('\n') + '\n';
  const res = await r.exec(['ip', '-force', '-batch', '-'], input);
  if (res.code !== 0) problems.push(...res.stderr.trim().split('\n').filter((l) => l && !/Cannot assign requested address|No such process/.test(l)));
  // verify
  const now = await addrs(r, rec.nic);
  for (const a of rec.addrs) if (!now.some((b) => b.local === a.local && b.prefixlen === a.prefixlen)) problems.push(`address ${cidr(a)} is not back on ${rec.nic}`);
  return problems;
}

/** The uplink is enslaved to the bridge (adoption after a restart). */
export async function isMoved(r: Runner, nic: string, bridge: string): Promise<boolean> {
  return (await link(r, nic))?.master === bridge;
}

/** For a bridge found with an enslaved uplink but no record: treat the bridge's addresses as the NIC's. */
export async function recoverRecord(r: Runner, nic: string, bridge: string): Promise<UplinkRecord> {
  const l = await link(r, nic);
  const b = await link(r, bridge);
  return {
    nic, bridge, mac: l?.address ?? '', mtu: l?.mtu ?? b?.mtu ?? 1500,
    addrs: (await addrs(r, bridge)).filter(movable),
    routes4: (await routes(r, bridge, 4)).filter(movableRoute),
    routes6: (await routes(r, bridge, 6)).filter(movableRoute),
  };
}

