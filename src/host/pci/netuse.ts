// Is a network interface in use by the host? Taking a NIC away from the host driver while the
// host talks through it cuts the host off (a remote admin loses the session that ran the
// command), so binding refuses such a device and says why.
//
// "In use" here: the interface (or the bridge/bond it is a port of) has an address other than
// a link-local or host-scope one, or carries a default route (IPv4 or IPv6). Read with
// `ip -json addr show dev IF` and `ip -json [-6] route show default`; the master comes from
// sysfs (net/IF/master).
import type { Host } from './sysfs.ts';

interface IpAddr { ifname?: string; addr_info?: { family?: string; local?: string; prefixlen?: number; scope?: string }[] }
interface IpRoute { dst?: string; gateway?: string; dev?: string }

async function addressesOf(host: Host, ifname: string): Promise<string[]> {
  const rows = await host.ipJson<IpAddr>(['addr', 'show', 'dev', ifname]);
  const out: string[] = [];
  for (const r of rows) {
    for (const a of r.addr_info ?? []) {
      if (!a.local || a.scope === 'link' || a.scope === 'host') continue;
      out.push(`${a.local}/${a.prefixlen ?? '?'}`);
    }
  }
  return out;
}

/** Default routes (both families) as 'dev -> via' pairs. */
export async function defaultRoutes(host: Host): Promise<IpRoute[]> {
  const v4 = await host.ipJson<IpRoute>(['route', 'show', 'default']);
  const v6 = await host.ipJson<IpRoute>(['-6', 'route', 'show', 'default']);
  return [...v4, ...v6].filter((r) => r.dev);
}

/**
 * Why `ifname` must not be taken from the host ([] when it may). `master` is the bridge or
 * bond it is a port of, if any (checked the same way).
 */
export async function netdevInUse(host: Host, ifname: string, master?: string, routes?: IpRoute[]): Promise<string[]> {
  const reasons: string[] = [];
  const rs = routes ?? (await defaultRoutes(host));
  for (const dev of master ? [ifname, master] : [ifname]) {
    const what = dev === ifname ? ifname : `${ifname}'s ${host.exists(`class/net/${dev}/bridge`) ? 'bridge' : 'master'} ${dev}`;
    for (const a of await addressesOf(host, dev)) reasons.push(`${what} has the address ${a} in use`);
    for (const r of rs) if (r.dev === dev) reasons.push(`${what} carries the host's default route${r.gateway ? ` (via ${r.gateway})` : ''}`);
  }
  return reasons;
}
