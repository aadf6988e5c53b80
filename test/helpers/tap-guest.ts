// A fast "guest" for TCP tests: a network namespace with a tap device (10.0.2.15/24, default
// route via 10.0.2.2) whose frames QEMU (-M none, a hub) relays to a qnet stream socket.
// The test builds the qnet side in-process, so it can look inside connections.
import path from 'node:path';
import { Switch } from '../../src/switch/switch.ts';
import { Gateway } from '../../src/stack/gateway.ts';
import { TcpStack } from '../../src/stack/tcp/stack.ts';
import { TcpNat } from '../../src/services/tcp-nat.ts';
import { StreamListener } from '../../src/link/stream.ts';
import type { Port } from '../../src/link/port.ts';
import { parseIp4 } from '../../src/wire/addr.ts';
import { createNetns, tap, cleanupNetns, type Netns } from './netns.ts';
import { makeTempDir } from './cleanup.ts';
import { waitFor } from './wait.ts';

export interface TapGuest {
  ns: Netns;
  sw: Switch;
  gw: Gateway;
  tcp: TcpStack;
  dir: string;
  close(): Promise<void>;
}

/** qnet (switch, gateway, TCP NAT to the host's loopback via 10.0.2.2) + a tap guest. */
export async function startTapGuest(opts: { onPort?: (p: Port) => void } = {}): Promise<TapGuest> {
  const tmp = makeTempDir('tap-guest-');
  const sock = path.join(tmp.path, 'q.sock');
  const sw = new Switch();
  const host = parseIp4('10.0.2.2')!;
  const gw = new Gateway({ mac: Buffer.from([0x52, 0x55, 10, 0, 2, 2]), net: parseIp4('10.0.2.0')!, prefix: 24, addrs: [host] });
  sw.attach(gw);
  gw.natAddrs.add(host);
  const tcp = new TcpStack(gw, gw.timers);
  gw.onTcp = (p) => tcp.input(p.src, p.dst, p.buf, p.l4, p.l4End, p.pseudo);
  const nat = new TcpNat(tcp, gw, { v4: host, v6: -1 });
  tcp.opener = (c) => { nat.open(c); return true; };
  const l = await StreamListener.listen({ kind: 'unix', path: sock });
  l.onPort = (p) => { sw.attach(p); opts.onPort?.(p); };
  const ns = await createNetns();
  const dev = await tap(ns, { addr: '10.0.2.15/24' });
  await ns.run(['ip', 'route', 'add', 'default', 'via', '10.0.2.2']);
  const qemu = ns.spawn(['qemu-system-x86_64', '-M', 'none', '-nodefaults', '-display', 'none',
    '-netdev', `tap,id=t0,ifname=${dev},script=no,downscript=no`, '-netdev', 'hubport,id=h0,hubid=0,netdev=t0',
    '-netdev', `stream,id=s0,server=off,addr.type=unix,addr.path=${sock}`, '-netdev', 'hubport,id=h1,hubid=0,netdev=s0'], { stdio: 'ignore' });
  await waitFor(() => sw.ports.size >= 2, { what: 'the QEMU tap relay to connect to qnet', timeoutMs: 20_000 });
  return {
    ns, sw, gw, tcp, dir: tmp.path,
    async close() {
      qemu.kill();
      await cleanupNetns();
      l.close();
      sw.close();
      tmp.remove();
    },
  };
}
