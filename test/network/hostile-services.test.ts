// Issue 13, cases 5 and 8, against a whole user-mode network over its stream socket:
// - DNS: every upstream query leaves from its own random source port (a bounded pool of
//   sockets), so an off-path forger must guess the port as well as the ID;
// - TFTP: a FIFO (or anything but a regular file) in the root is refused without being
//   opened for blocking, so it cannot stall TFTP (or every file operation of the process).
// A well-behaved guest keeps resolving, pinging and downloading meanwhile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import dgram from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { Network } from '../../src/network/network.ts';
import { parseAttach } from '../../src/network/attach.ts';
import { buildReply, parseQuestion } from '../../src/services/dns-codec.ts';
import { setLogSink } from '../../src/util/log.ts';
import { tmpDir } from '../link/peers.ts';
import { RawGuest, dnsQuery, ip, until } from './raw-guest.ts';

setLogSink(() => {});
const GW = { ip: ip('10.0.2.2'), mac: '52:55:0a:00:02:02' };
const DNS = ip('10.0.2.3');

/** A DNS server on loopback answering every A query with 192.0.2.1 (with `hold`, only once released); it records each query's source port. */
async function upstream(holdAnswers = false) {
  const sock = dgram.createSocket('udp4');
  const ports: number[] = [];
  let hold = holdAnswers;
  const held: (() => void)[] = [];
  sock.on('message', (m, r) => {
    ports.push(r.port);
    const q = parseQuestion(m);
    if (!q) return;
    const answer = (): void => sock.send(buildReply(m, q, 0, [ip('192.0.2.1')], 60), r.port, r.address);
    if (hold) held.push(answer); else answer();
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  return {
    port: sock.address().port, ports, held,
    release: () => { hold = false; held.splice(0).forEach((f) => f()); },
    close: () => sock.close(),
  };
}

async function userNet(t: { after: (fn: () => void) => void }, upstreamPort: number, tftp?: string) {
  const dir = tmpDir('qnet-hostile-svc-');
  const sock = path.join(dir, 'u.sock');
  const n = await Network.start({
    name: 'svc', mode: 'user', net: ip('10.0.2.0'), prefix: 24, gateway: GW.ip, dns: DNS, dhcpStart: ip('10.0.2.15'),
    upstreams: [{ host: '127.0.0.1', port: upstreamPort }], tftp, listen: [parseAttach(`unix:${sock}`)],
  });
  t.after(() => { n.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  return { n, sock };
}

test('DNS: each upstream query from its own random source port; at most 64 sockets at once, then shared; all closed when done', async (t) => {
  const up = await upstream();
  t.after(() => up.close());
  const { n, sock } = await userNet(t, up.port);
  const g = await RawGuest.connect(sock, '52:54:00:12:34:56', GW);
  t.after(() => g.close());
  await g.lease();

  for (let k = 0; k < 40; k++) assert.deepEqual((await g.resolve(`q${k}.example`, 100 + k, 41000 + k, DNS)).addrs, [ip('192.0.2.1')]);
  assert.equal(up.ports.length, 40);
  // the kernel picks each socket's port at random from ~28,000: 40 draws all but never collide
  assert.ok(new Set(up.ports).size >= 36, `only ${new Set(up.ports).size} distinct source ports for 40 queries`);
  assert.equal(n.dns.stats.sockets, 0, 'each query\'s socket is closed once it is answered');
  assert.equal(n.dns.stats.portShared, 0);

  // 100 queries in flight at once: 64 sockets (64 distinct ports), 36 queries share one
  up.ports.length = 0;
  const slow = await upstream(true);
  t.after(() => slow.close());
  const { n: n2, sock: sock2 } = await userNet(t, slow.port);
  const h = await RawGuest.connect(sock2, '52:54:00:12:34:57', GW);
  t.after(() => h.close());
  await h.lease();
  for (let k = 0; k < 100; k++) h.sendUdp(h.ip, 42000 + k, DNS, 53, dnsQuery(`c${k}.example`, 1000 + k));
  await until(() => slow.ports.length === 100, 'the 100 queries upstream');
  assert.equal(n2.dns.stats.sockets, 64);
  assert.equal(n2.dns.stats.portShared, 36);
  assert.equal(new Set(slow.ports).size, 64);
  slow.release();
  const answers = await until(() => { const a = h.seen((r) => r.udp?.srcPort === 53 && r.udp.dstPort >= 42000 && r.udp.dstPort < 42100); return a.length === 100 && a; }, 'the 100 answers');
  assert.equal(new Set(answers.map((r) => r.udp!.dstPort)).size, 100);
  await until(() => n2.dns.stats.sockets === 0, 'the pool to empty');
  assert.equal(n2.dns.stats.answered, 100);
  await h.ping();
});

test('TFTP: a FIFO, a directory or a device in the root is refused without blocking; regular files are still served', async (t) => {
  const up = await upstream();
  t.after(() => up.close());
  const root = tmpDir('qnet-hostile-tftp-');
  fs.writeFileSync(path.join(root, 'pxelinux.0'), Buffer.alloc(1000, 7));
  execFileSync('mkfifo', [path.join(root, 'boot.fifo')]);
  fs.symlinkSync('boot.fifo', path.join(root, 'link-to-fifo'));
  fs.mkdirSync(path.join(root, 'dir'));
  fs.symlinkSync('/dev/zero', path.join(root, 'zero')); // outside the root: refused before any check of its type
  const { n, sock } = await userNet(t, up.port, root);
  const rogue = await RawGuest.connect(sock, '52:54:00:00:0e:01', GW);
  t.after(() => rogue.close());
  await rogue.lease();
  const rrq = (name: string) => Buffer.concat([Buffer.from([0, 1]), Buffer.from(`${name}\0octet\0`)]);
  // as many FIFO requests at once as libuv has threadpool threads (4, and the per-guest limit):
  // blocking opens would stall them all, and every file operation of the process with them;
  // then a FIFO again, a directory and a device outside the root
  const batches = [['boot.fifo', 'link-to-fifo', 'boot.fifo', 'link-to-fifo'], ['boot.fifo', 'dir', 'zero']];
  let port = 3000;
  for (const names of batches) {
    const first = port;
    names.forEach((name) => rogue.sendUdp(rogue.ip, port++, GW.ip, 69, rrq(name)));
    // (answered in any order: each request's checks run on their own)
    const errs = await until(() => { const a = rogue.seen((r) => r.udp !== undefined && r.udp.srcPort === 69 && r.udp.dstPort >= first && r.udp.dstPort < port); return a.length === names.length && a; }, 'the TFTP answers');
    for (const e of errs) {
      const name = names[e.udp!.dstPort - first];
      assert.equal(e.udp!.payload.readUInt16BE(0), 5, `${name} gets an error`);
      assert.equal(e.udp!.payload.readUInt16BE(2), 2, `access violation for ${name}: ${e.udp!.payload.subarray(4).toString()}`);
    }
  }
  assert.equal(n.tftp!.stats.notRegular, 6);
  assert.equal(n.tftp!.stats.active, 0);
  // the process's threadpool is free: file operations complete
  await fs.promises.stat(root);

  // a well-behaved guest downloads a regular file
  const good = await RawGuest.connect(sock, '52:54:00:12:34:56', GW);
  t.after(() => good.close());
  await good.lease();
  good.sendUdp(good.ip, 4000, GW.ip, 69, rrq('pxelinux.0'));
  let received = 0;
  for (let block = 1; ; block++) {
    const d = await good.next((r) => r.udp?.dstPort === 4000 && r.udp.payload.readUInt16BE(0) === 3 && r.udp.payload.readUInt16BE(2) === block, `DATA block ${block}`);
    const len = d.udp!.payload.length - 4;
    received += len;
    good.sendUdp(good.ip, 4000, GW.ip, d.udp!.srcPort, Buffer.from([0, 4, block >> 8, block & 0xff]));
    if (len < 512) break;
  }
  assert.equal(received, 1000);
  await until(() => n.tftp!.stats.completed === 1, 'the transfer to complete');
});
