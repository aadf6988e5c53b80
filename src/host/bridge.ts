// The Linux bridge of a kernel network: create, inspect, adopt, delete.
//
// Ownership: a bridge qnet creates carries the alias `qnet:NETWORK` (`ip link set DEV alias`),
// so after a crash, or with the state directory lost, start can tell its own leftovers from a
// bridge somebody else made. qnet deletes only bridges with its alias (and recorded in its
// state); an existing host bridge named in a `mode: bridge` network is used, never changed
// beyond enslaving ports, and never deleted.
//
// The bridge's MAC is set when qnet creates it (a locally administered address derived from
// the network name, or the uplink's MAC in bridge mode), so it does not change as ports come
// and go (Linux would otherwise take the lowest port MAC). STP, when asked for, starts with
// the kernel's smallest forward delay (2 s); without STP ports forward at once.
import crypto from 'node:crypto';
import { addrs, ipBatch, link, links, type AddrInfo, type LinkInfo } from './ip.ts';
import { mustJson, type Runner } from './run.ts';

export const ALIAS_PREFIX = 'qnet:';

export function ownerAlias(network: string): string { return `${ALIAS_PREFIX}${network}`; }

/** The network named by a link's qnet alias, if it has one. */
export function aliasOwner(l: Pick<LinkInfo, 'ifalias'>): string | undefined {
  return l.ifalias?.startsWith(ALIAS_PREFIX) ? l.ifalias.slice(ALIAS_PREFIX.length) : undefined;
}

/** Linux interface names: 1-15 bytes, no '/', no whitespace, not '.' or '..'. */
export function validIfname(n: string): boolean {
  return /^[A-Za-z0-9_.:@+-]{1,15}$/.test(n) && n !== '.' && n !== '..';
}

/** A stable, locally administered MAC for a network's bridge: 02:71:6e (“qn”) + 3 hash bytes. */
export function bridgeMac(network: string): string {
  const h = crypto.createHash('sha256').update(`qnet-bridge\0${network}`).digest();
  return ['02', '71', '6e', ...[h[0], h[1], h[2]].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export interface BridgeSpec {
  name: string;
  /** the qnet network it carries (its alias) */
  network: string;
  mtu?: number;
  stp?: boolean;
  mac?: string;
  /** the gateway address on the bridge, e.g. { ip: '10.0.0.1', prefix: 24 } */
  addr?: { ip: string; prefix: number };
}

export interface BridgeState {
  name: string;
  exists: boolean;
  /** it exists and is a bridge */
  isBridge: boolean;
  /** the network in its qnet alias (qnet created it) */
  owner?: string;
  mtu?: number;
  stp?: boolean;
  mac?: string;
  up?: boolean;
  addrs: AddrInfo[];
  /** enslaved interfaces */
  ports: string[];
}

export async function inspectBridge(r: Runner, name: string): Promise<BridgeState> {
  const l = await link(r, name);
  if (!l) return { name, exists: false, isBridge: false, addrs: [], ports: [] };
  const isBridge = l.kind === 'bridge';
  const ports = isBridge ? (await links(r)).filter((x) => x.master === name).map((x) => x.ifname) : [];
  return {
    name, exists: true, isBridge, owner: aliasOwner(l), mtu: l.mtu, stp: isBridge ? Number(l.data.stp_state ?? 0) !== 0 : undefined,
    mac: l.address, up: l.flags.includes('UP'), addrs: await addrs(r, name), ports,
  };
}

/** Create the bridge (with alias, MAC, MTU, STP), bring it up and give it its address. */
export async function createBridge(r: Runner, spec: BridgeSpec): Promise<void> {
  if (!validIfname(spec.name)) throw new Error(`'${spec.name}' is not a valid interface name (1-15 letters, digits, _ . - : @ +)`);
  const add = ['link', 'add', spec.name];
  if (spec.mtu) add.push('mtu', String(spec.mtu));
  add.push('address', spec.mac ?? bridgeMac(spec.network), 'type', 'bridge', 'stp_state', spec.stp ? '1' : '0', 'forward_delay', spec.stp ? '200' : '0');
  const cmds = [add, ['link', 'set', 'dev', spec.name, 'alias', ownerAlias(spec.network)]];
  if (spec.addr) cmds.push(['addr', 'add', `${spec.addr.ip}/${spec.addr.prefix}`, 'dev', spec.name]);
  cmds.push(['link', 'set', 'dev', spec.name, 'up']);
  try {
    await ipBatch(r, cmds);
  } catch (e) {
    // half made: take it away again so the next attempt starts clean
    await r.exec(['ip', 'link', 'del', 'dev', spec.name]);
    throw e;
  }
}

/**
 * Bring an existing bridge to the spec (after a restart or crash): MTU, STP, address, up.
 * Only what differs is changed, so an adopted bridge keeps its ports forwarding.
 */
export async function reconcileBridge(r: Runner, spec: BridgeSpec, st: BridgeState): Promise<string[]> {
  const cmds: string[][] = [];
  const did: string[] = [];
  if (spec.mtu && st.mtu !== spec.mtu) { cmds.push(['link', 'set', 'dev', spec.name, 'mtu', String(spec.mtu)]); did.push(`mtu ${spec.mtu}`); }
  if (spec.stp !== undefined && st.stp !== spec.stp) {
    // one attribute at a time: the kernel checks the delay against the STP state in force
    if (spec.stp) cmds.push(['link', 'set', 'dev', spec.name, 'type', 'bridge', 'forward_delay', '200'], ['link', 'set', 'dev', spec.name, 'type', 'bridge', 'stp_state', '1']);
    else cmds.push(['link', 'set', 'dev', spec.name, 'type', 'bridge', 'stp_state', '0'], ['link', 'set', 'dev', spec.name, 'type', 'bridge', 'forward_delay', '0']);
    did.push(`stp ${spec.stp ? 'on' : 'off'}`);
  }
  if (spec.addr && !st.addrs.some((a) => a.family === 'inet' && a.local === spec.addr!.ip && a.prefixlen === spec.addr!.prefix)) {
    cmds.push(['addr', 'add', `${spec.addr.ip}/${spec.addr.prefix}`, 'dev', spec.name]);
    did.push(`address ${spec.addr.ip}/${spec.addr.prefix}`);
  }
  if (!st.up) { cmds.push(['link', 'set', 'dev', spec.name, 'up']); did.push('up'); }
  await ipBatch(r, cmds);
  return did;
}

/** Delete a bridge (its ports are released by the kernel). No error when it is already gone. */
export async function deleteBridge(r: Runner, name: string): Promise<void> {
  const res = await r.exec(['ip', 'link', 'del', 'dev', name]);
  if (res.code !== 0 && !/Cannot find device|does not exist/i.test(res.stderr)) await ipBatch(r, [['link', 'del', 'dev', name]]);
}

export interface FdbEntry { mac: string; port: string; vlan?: number }

/** MACs the bridge learned on its ports (`bridge fdb`, without permanent/self entries). */
export async function learnedMacs(r: Runner, bridge: string): Promise<FdbEntry[]> {
  const out = await mustJson<{ mac: string; ifname: string; flags?: string[]; state?: string; vlan?: number; master?: string }[]>(r, ['bridge', '-json', 'fdb', 'show', 'br', bridge]);
  return out
    .filter((e) => e.state !== 'permanent' && !(e.flags ?? []).includes('self') && e.ifname !== bridge)
    .map((e) => ({ mac: e.mac.toLowerCase(), port: e.ifname, vlan: e.vlan }));
}
