// `qnet forward add|rm|ls`: host port forwards into a network's guests, at runtime.
import net from 'node:net';
import type { ForwardInfo, ForwardRequest, ForwardRule } from '../daemon/types.ts';
import { seg } from '../daemon/client.ts';
import { client, json, parse, runCommand, table, UsageError } from './common.ts';
import { hostPort } from './net.ts';

const USAGE = `usage: qnet forward add NET [tcp|udp:][HOSTADDR:]HOSTPORT GUEST:PORT [--json]
       qnet forward rm NET ID
       qnet forward ls [NET] [--json]

  add   forward HOSTADDR:HOSTPORT on the host (default 127.0.0.1, tcp) to PORT of GUEST,
        a VM name (resolved through leases and static hosts) or an IPv4 address, e.g.
          qnet forward add default 2222 vm1:22
          qnet forward add default udp:0.0.0.0:5353 10.0.2.15:53
        IPv6 host addresses go in brackets: tcp:[::1]:2222
  rm    remove forward ID (as listed: tcp:127.0.0.1:2222), or tcp:HOSTPORT
  ls    list forwards of NET or of all networks
  --json      print the daemon's answer as JSON
  --api PATH  the daemon's API socket (default: $QNET_API or the runtime directory)`;

function port(s: string, what: string, min = 1): number {
  if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > 65535) throw new UsageError(`${what} must be a port number ${min}-65535, got '${s}'`);
  return Number(s);
}

/** `[tcp|udp:][HOSTADDR:]HOSTPORT` */
export function parseHostSide(s: string): Pick<ForwardRequest, 'proto' | 'hostAddr' | 'hostPort'> {
  let proto: 'tcp' | 'udp' = 'tcp';
  let rest = s;
  const m = /^(tcp|udp):(.*)$/i.exec(s);
  if (m) { proto = m[1].toLowerCase() as 'tcp' | 'udp'; rest = m[2]; }
  let addr: string | undefined;
  let p: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(rest);
  if (v6) { addr = v6[1]; p = v6[2]; }
  else {
    const i = rest.lastIndexOf(':');
    if (i >= 0) { addr = rest.slice(0, i); p = rest.slice(i + 1); } else p = rest;
    if (addr !== undefined && addr.includes(':')) throw new UsageError(`put IPv6 host addresses in brackets: ${proto}:[${addr}]:${p}`);
  }
  if (addr === '') addr = undefined;
  if (addr !== undefined && net.isIP(addr) === 0) throw new UsageError(`host address must be an IP address, got '${addr}'`);
  const spec: Pick<ForwardRequest, 'proto' | 'hostAddr' | 'hostPort'> = { proto, hostPort: port(p, 'the host port', 0) };
  if (addr !== undefined) spec.hostAddr = addr;
  return spec;
}

/** `GUEST:PORT` */
export function parseGuestSide(s: string): Pick<ForwardRule, 'guest' | 'guestPort'> {
  const i = s.lastIndexOf(':');
  if (i <= 0) throw new UsageError(`the guest side must be GUEST:PORT (a VM name or IPv4 address, then a port), got '${s}'`);
  return { guest: s.slice(0, i), guestPort: port(s.slice(i + 1), 'the guest port') };
}

export function parseForwardArgs(host: string, guest: string): ForwardRequest {
  return { ...parseHostSide(host), ...parseGuestSide(guest) };
}

type Fwd = ForwardInfo & { network: string };

export function formatForwards(fwds: Fwd[]): string {
  if (fwds.length === 0) return 'no forwards\n';
  return table(['NETWORK', 'ID', 'HOST', 'GUEST', 'CONNECTIONS', 'SOURCE'],
    fwds.map((f) => [f.network, f.id, `${f.proto}:${hostPort(f.hostAddr, f.hostPort)}`, `${f.guest}:${f.guestPort}`, f.connections, f.source]));
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('forward', USAGE, async () => {
    const { values, positionals } = parse(argv, {});
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    const [sub, ...rest] = positionals;
    const api = client(values.api);
    switch (sub) {
      case 'add': {
        if (rest.length !== 3) throw new UsageError('expected: qnet forward add NET [tcp|udp:][HOSTADDR:]HOSTPORT GUEST:PORT');
        const [netName, host, guest] = rest;
        const spec = parseForwardArgs(host, guest);
        const f = await api.post<ForwardInfo>(`/v1/networks/${seg(netName)}/forwards`, spec);
        if (values.json) process.stdout.write(json({ ...f, network: netName }));
        else process.stdout.write(`${f.id}: ${f.proto} ${hostPort(f.hostAddr, f.hostPort)} -> ${f.guest}:${f.guestPort} on ${netName}\n`);
        return 0;
      }
      case 'rm': case 'remove': case 'del': {
        if (rest.length !== 2) throw new UsageError('expected: qnet forward rm NET ID');
        const r = await api.del<{ removed: ForwardInfo[] }>(`/v1/networks/${seg(rest[0])}/forwards/${seg(rest[1])}`);
        if (values.json) process.stdout.write(json(r));
        else for (const f of r.removed) process.stdout.write(`removed ${f.id} (-> ${f.guest}:${f.guestPort})\n`);
        return 0;
      }
      case 'ls': case 'list': case undefined: {
        if (rest.length > 1) throw new UsageError(`give at most one network, got ${rest.length}`);
        let fwds: Fwd[];
        if (rest[0]) fwds = (await api.get<(ForwardInfo & { network?: string })[]>(`/v1/networks/${seg(rest[0])}/forwards`)).map((f) => ({ ...f, network: f.network ?? rest[0] }));
        else fwds = await api.get<Fwd[]>('/v1/forwards');
        process.stdout.write(values.json ? json(fwds) : formatForwards(fwds));
        return 0;
      }
      default:
        throw new UsageError(`unknown subcommand '${sub}' (expected add, rm or ls)`);
    }
  });
}
