// Issue 13, cases 1 and 9, against a whole NAT network over its real stream socket: a rogue
// guest (raw frames) floods SYNs and datagrams from invented sources and opens connections
// from fake in-subnet addresses, while a well-behaved guest on another port keeps its
// connection; the limits it meets are per port, configurable and reported, and its flows go
// with its port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import net from 'node:net';
import { Network } from '../../src/network/network.ts';
import { parseAttach } from '../../src/network/attach.ts';
import { networkOptions } from '../../src/daemon/daemon.ts';
import { parseConfig } from '../../src/config/config.ts';
import { FdBudget } from '../../src/util/fds.ts';
import { setLogSink } from '../../src/util/log.ts';
import { tmpDir } from '../link/peers.ts';
import { waitFor } from '../helpers/wait.ts';
import { DHCP, RawGuest, ip } from './raw-guest.ts';

const logLines: string[] = [];
setLogSink((l) => logLines.push(l));

const GW = { ip: ip('10.78.0.1'), mac: '52:55:0a:4e:00:01' };
const GOOD = '52:54:00:00:02:01';
const ROGUE = '52:54:00:00:0e:02';
const TCP_SYN = 0x02, TCP_ACK = 0x10;

/** A host TCP server on loopback that counts its live connections. */
async function hostServer(t: { after: (fn: () => void) => void }) {
  const live = new Set<net.Socket>();
  let accepted = 0;
  const srv = net.createServer((s) => { accepted++; live.add(s); s.on('close', () => live.delete(s)); s.on('error', () => {}); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of live) s.destroy(); srv.close(); });
  return { port: (srv.address() as net.AddressInfo).port, live, get accepted() { return accepted; } };
}

async function lab(t: { after: (fn: () => void) => void }, extra: Partial<Parameters<typeof Network.start>[0]> = {}) {
  const dir = tmpDir('qnet-hostile-src-');
  const sock = path.join(dir, 'lab.sock');
  const n = await Network.start({
    name: 'lab', mode: 'nat', net: ip('10.78.0.0'), prefix: 24, gateway: GW.ip, dns: GW.ip,
    dhcpStart: ip('10.78.0.100'), dhcpSize: 20, upstreams: [], listen: [parseAttach(`unix:${sock}`)], ...extra,
  });
  t.after(() => { n.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  return { n, sock };
}

/** The good guest: a lease, then one TCP connection to the host through NAT (handshake done). */
async function goodGuest(sock: string, hostPort: number) {
  const g = await RawGuest.connect(sock, GOOD, GW);
  assert.equal((await g.lease())?.type, DHCP.ACK);
  g.sendTcp(GW.ip, 40000, hostPort, 1, 0, TCP_SYN);
  const sa = await g.next((r) => r.tcp?.dstPort === 40000 && r.tcp.flags === (TCP_SYN | TCP_ACK), 'the good guest\'s SYN-ACK');
  g.sendTcp(GW.ip, 40000, hostPort, 2, (sa.tcp!.seq + 1) >>> 0, TCP_ACK);
  return g;
}

type PortStat = { name: string; macs: string[]; rxFrames: number; rxDropped: number; drops: Record<string, number> };
const portOf = (n: Network, m: string) => (n.stats() as { ports: PortStat[] }).ports.find((p) => p.macs.includes(m));
const rand = (k: number) => Math.floor(Math.random() * k);

test('sources: a flood of SYNs and datagrams from invented sources opens nothing; a good guest keeps its connection', { timeout: 120_000 }, async (t) => {
  const srv = await hostServer(t);
  const budget = new FdBudget(100_000, 1000);
  const { n, sock } = await lab(t, { fdBudget: budget, maxUdpFlowsPerPort: 16 });
  const good = await goodGuest(sock, srv.port);
  t.after(() => good.close());
  await waitFor(() => srv.live.size === 1, { what: 'the good guest\'s host connection' });

  const rogue = await RawGuest.connect(sock, ROGUE, GW);
  t.after(() => rogue.close());
  rogue.ip = ip('10.78.0.50'); // a static address: learned for the rogue's port (its only one here)
  await rogue.barrier(); // the rogue's MAC is learned before the flood
  const N = 30_000;
  for (let i = 0; i < N; i++) {
    // off-subnet sources (documentation ranges, random hosts)
    const src = (ip('198.51.100.0') + rand(256) + (rand(2) ? 0 : ip('203.0.113.0') - ip('198.51.100.0'))) >>> 0;
    if (i % 2) rogue.sendTcpFrom(src, GW.ip, 1024 + rand(60000), srv.port, rand(2 ** 32), 0, TCP_SYN);
    else rogue.sendUdp(src, 1024 + rand(60000), GW.ip, 9, Buffer.from('x'));
    if (i % 500 === 0) await waitFor(() => rogue.peer.sock.writableLength === 0, { what: 'the flood writes to drain' });
  }
  // and datagrams from its own address to many ports: only udpFlowsPerPort of them get sockets
  for (let i = 0; i < 200; i++) rogue.sendUdp(rogue.ip, 2000 + i, GW.ip, 9, Buffer.from('y'));
  await waitFor(() => (portOf(n, ROGUE.toLowerCase())?.rxFrames ?? 0) >= N + 200, { what: 'the flood read by qnet', timeoutMs: 60_000 });
  await rogue.barrier();
  const p = portOf(n, ROGUE)!;
  assert.equal(p.drops['source.offSubnet'], N, 'every invented source dropped, per port');
  assert.equal(p.drops.guard, N);
  assert.equal(srv.accepted, 1, 'no host connection for any invented source');
  assert.equal(n.tcp.size, 1, 'only the good guest\'s connection');
  assert.equal(n.udpNat!.size, 16, 'the rogue\'s own datagrams: udpFlowsPerPort host sockets');
  assert.equal(budget.used, 1 + 16, 'descriptors: the good connection and the rogue\'s 16 flows');
  assert.ok(n.limits.count('udp.udpFlowsPerPort', p.name) > 0, 'the UDP limit hit is reported for the rogue\'s port');
  assert.ok(logLines.some((l) => /limit reached: udp\.udpFlowsPerPort/.test(l) && l.includes(p.name)), 'and logged with the port');
  // over the limit the rogue is told (administratively prohibited), not left guessing
  assert.ok(rogue.seen((r) => r.icmp?.type === 3 && r.icmp.code === 13).length > 0);

  // the good guest still has its connection, and can open another
  assert.equal(srv.live.size, 1);
  good.sendTcp(GW.ip, 40001, srv.port, 1, 0, TCP_SYN);
  await good.next((r) => r.tcp?.dstPort === 40001 && r.tcp.flags === (TCP_SYN | TCP_ACK), 'a second SYN-ACK for the good guest');
  await waitFor(() => srv.accepted === 2, { what: 'the good guest\'s second connection' });

  // the rogue's port goes: its flows go with it
  rogue.close();
  await waitFor(() => n.udpNat!.size === 0, { what: 'the rogue\'s UDP flows to close' });
  assert.equal(budget.used, 2, 'their descriptors returned');
});

test('sources: fake in-subnet addresses beyond the cap are dropped; connections are limited per port, the limit configurable, reported and distinct from a RST; the port\'s connections go with it', { timeout: 60_000 }, async (t) => {
  const srv = await hostServer(t);
  // the limits as a user writes them
  const cfg = parseConfig(`
networks:
  - name: lab
    mode: nat
    subnet: 10.78.0.0/24
    limits: { connectionsPerPort: 20, addressesPerPort: 4 }
`, '(test)', { stateDir: '/nonexistent', runtimeDir: '/nonexistent' }).networks[0];
  const o = networkOptions(cfg);
  assert.deepEqual([o.maxConnsPerGuest, o.maxAddrsPerPort], [20, 4]);
  const { n, sock } = await lab(t, { maxConnsPerGuest: o.maxConnsPerGuest, maxAddrsPerPort: o.maxAddrsPerPort });
  const good = await goodGuest(sock, srv.port);
  t.after(() => good.close());
  await waitFor(() => srv.live.size === 1, { what: 'the good guest\'s host connection' });

  const rogue = await RawGuest.connect(sock, ROGUE, GW);
  t.after(() => rogue.close());
  await rogue.barrier();
  // five fake addresses (none leased), ten connections each, every handshake completed
  const fakes = [50, 51, 52, 53, 54].map((k) => ip(`10.78.0.${k}`));
  let sport = 30000;
  for (const src of fakes) for (let k = 0; k < 10; k++) rogue.sendTcpFrom(src, GW.ip, sport++, srv.port, 1, 0, TCP_SYN);
  await rogue.barrier();
  await waitFor(() => new Set(rogue.seen((r) => r.tcp?.flags === (TCP_SYN | TCP_ACK)).map((r) => r.tcp!.dstPort)).size + rogue.seen((r) => r.icmp?.type === 3).length >= 40, { what: '40 answers (SYN-ACK or ICMP) for the rogue' });
  // one per connection (a slow ACK on a loaded machine may bring a retransmitted SYN-ACK)
  const synAcks = [...new Map(rogue.seen((r) => r.tcp?.flags === (TCP_SYN | TCP_ACK)).map((r) => [`${r.ip!.dst}:${r.tcp!.dstPort}`, r])).values()];
  for (const r of synAcks) rogue.sendTcpFrom(r.ip!.dst, GW.ip, r.tcp!.dstPort, srv.port, 2, (r.tcp!.seq + 1) >>> 0, TCP_ACK);
  await rogue.barrier();

  const p = portOf(n, ROGUE)!;
  assert.equal(p.drops['source.tooMany'], 10, 'the fifth address is not the rogue\'s: its 10 SYNs are dropped');
  assert.deepEqual(n.addressesOf(n.guard!.holderOf(fakes[0])!).sort(), ['10.78.0.50', '10.78.0.51', '10.78.0.52', '10.78.0.53']);
  assert.equal(synAcks.length, 20, 'connectionsPerPort across all its addresses');
  const prohibited = rogue.seen((r) => r.icmp?.type === 3 && r.icmp.code === 13);
  assert.equal(prohibited.length, 20, 'the other 20 SYNs get administratively prohibited');
  assert.equal(rogue.seen((r) => ((r.tcp?.flags ?? 0) & 0x04) !== 0).length, 0, 'and no RST: the guest can tell a limit from a closed port');
  await waitFor(() => srv.live.size === 21, { what: 'the rogue\'s 20 host connections and the good one' });
  assert.equal(n.tcp.countOf(fakes[0]), 20, 'all counted against the port');
  assert.equal(n.limits.count('tcp.connectionsPerPort', p.name), 20);
  const hit = n.limits.snapshot().find((h) => h.limit === 'tcp.connectionsPerPort')!;
  assert.deepEqual([hit.port, hit.value], [p.name, 20], 'visible in /metrics with the port and the limit');
  assert.equal(logLines.filter((l) => /limit reached: tcp\.connectionsPerPort/.test(l)).length, 1, 'logged once per interval');
  assert.equal(n.limits.count('source.addressesPerPort', p.name), 10);

  // the good guest, on its own port, is not limited by the rogue
  good.sendTcp(GW.ip, 40001, srv.port, 1, 0, TCP_SYN);
  await good.next((r) => r.tcp?.dstPort === 40001 && r.tcp.flags === (TCP_SYN | TCP_ACK), 'the good guest\'s second SYN-ACK');

  // the rogue's port closes: every connection it had, from all its addresses, is closed on the host
  rogue.close();
  await waitFor(() => srv.live.size === 2, { what: 'the rogue\'s host connections to close', diag: () => `${srv.live.size} live` });
  assert.equal(n.tcp.countOf(fakes[0]), 0);
  assert.equal(n.guard!.holderOf(fakes[0]), null, 'its addresses are free again');
});
