// The gateway's TCP under frame loss, against a real Linux TCP stack: a network namespace
// with a tap device is the guest, QEMU (-M none, hub) relays the tap to qnet's stream socket,
// and the test drops a share of the frames in both directions at qnet's port. Bulk transfers
// both ways must arrive intact (hash-checked) through retransmission, fast retransmit and
// SACK-based recovery; a stall or corruption fails the test, and qnet's counters must show
// that fast retransmit and recovery (not the retransmission timer) repaired the losses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { random } from '../helpers/prng.ts';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { startTapGuest } from '../helpers/tap-guest.ts';
import { waitFor } from '../helpers/wait.ts';
import { needsRoot } from '../helpers/netns.ts';

test('tcp: bulk data survives 2% frame loss both ways (real Linux peer)', { timeout: 120_000, skip: needsRoot }, async (t) => {
  const seed = Number(process.env.QNET_LOSS_SEED ?? Date.now() % 100000);
  const rand = random(seed);
  const LOSS = 0.02;
  let dropped = 0;
  const g = await startTapGuest({
    onPort: (p) => {
      const deliver = p.onFrame!;
      p.onFrame = (f, port) => { if (f.length > 100 && rand() < LOSS) { dropped++; return; } deliver(f, port); };
      const send = p.send.bind(p);
      p.send = (f) => { if (f.length > 100 && rand() < LOSS) { dropped++; return; } send(f); };
      // the gateway builds most frames in place in the port's output: not committing one drops it
      const commit = p.commitFrame.bind(p);
      p.commitFrame = (len) => { if (len > 100 && rand() < LOSS) { dropped++; return; } commit(len); };
    },
  });
  const { ns, tcp } = g;
  const SIZE = 16 * 1024 * 1024;
  const blob = crypto.randomBytes(SIZE);
  const blobHash = crypto.createHash('sha256').update(blob).digest('hex');
  const srv = http.createServer((_req, res) => { res.writeHead(200, { 'content-length': SIZE }); res.end(blob); }).listen(0, '127.0.0.1');
  let sinkHash = '';
  let sinkBytes = 0;
  const sink = net.createServer((c) => {
    const h = crypto.createHash('sha256');
    c.on('data', (d) => { h.update(d); sinkBytes += d.length; });
    c.on('end', () => { sinkHash = h.digest('hex'); c.end(); });
  }).listen(0, '127.0.0.1');
  await Promise.all([new Promise((r) => srv.once('listening', r)), new Promise((r) => sink.once('listening', r))]);

  t.after(async () => { srv.close(); sink.close(); await g.close(); });

  const down = path.join(g.dir, 'down.bin');
  const r1 = await ns.exec(['sh', '-c', `timeout 60 busybox wget -q -O ${down} http://10.0.2.2:${(srv.address() as net.AddressInfo).port}/; echo rc=$?`], { timeoutMs: 70_000 });
  assert.match(r1.stdout, /rc=0/, `download failed (seed ${seed}): ${r1.stdout}${r1.stderr}`);
  assert.equal(crypto.createHash('sha256').update(fs.readFileSync(down)).digest('hex'), blobHash, `download corrupted (seed ${seed})`);

  const up = path.join(g.dir, 'up.bin');
  fs.writeFileSync(up, crypto.randomBytes(SIZE));
  const upHash = crypto.createHash('sha256').update(fs.readFileSync(up)).digest('hex');
  const r2 = await ns.exec(['sh', '-c', `timeout 60 busybox nc 10.0.2.2 ${(sink.address() as net.AddressInfo).port} < ${up} > /dev/null; echo rc=$?`], { timeoutMs: 70_000 });
  assert.match(r2.stdout, /rc=0/, `upload failed (seed ${seed}): ${r2.stdout}${r2.stderr}`);
  await waitFor(() => sinkHash, { what: `the end of the upload at the sink (seed ${seed})` });
  assert.equal(sinkBytes, SIZE, `upload truncated (seed ${seed})`);
  assert.equal(sinkHash, upHash, `upload corrupted (seed ${seed})`);
  assert.ok(dropped > 100, `the test dropped only ${dropped} frames`);
  const st = tcp.stats;
  const recovery = `seed ${seed}: ${JSON.stringify({ retransmits: st.retransmits, fastRetransmits: st.fastRetransmits, recoveries: st.recoveries, partialAcks: st.partialAcks, timeouts: st.timeouts })}`;
  if (process.env.QNET_LOSS_VERBOSE) console.log(`# ${recovery}, dropped ${dropped}`);
  assert.ok(st.retransmits > 0, 'no retransmissions towards the guest despite loss');
  assert.ok(st.outOfOrder > 0, 'no out-of-order segments from the guest despite loss');
  // Which recovery happened: losses were found by duplicate ACKs / SACK (fast retransmit) and
  // ended by a full ACK, far more often than by the retransmission timer; a stack that only
  // used timeouts would have no fast retransmits and no recoveries.
  assert.ok(st.fastRetransmits > 0, `no fast retransmit towards the guest (${recovery})`);
  assert.ok(st.recoveries > 0, `no loss episode ended in recovery (${recovery})`);
  assert.ok(st.partialAcks > 0, `no NewReno partial ACK in recovery (${recovery})`);
  assert.ok(st.fastRetransmits > st.timeouts, `timeouts outnumber fast retransmits (${recovery})`);
  // every retransmitted segment was sent by a fast retransmit, in recovery or by a timeout
  assert.ok(st.retransmits >= st.fastRetransmits + st.timeouts, recovery);
});
