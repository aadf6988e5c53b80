// Flow control end to end, against a real Linux TCP peer (see helpers/tap-guest.ts):
// a host side that stops reading must close the guest's window (qnet buffers a bounded
// amount), and a guest that stops reading must pause the host socket (qnet queues a
// bounded amount). Afterwards both transfers complete intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startTapGuest } from '../helpers/tap-guest.ts';
import { waitFor } from '../helpers/wait.ts';
import { needsRoot } from '../helpers/netns.ts';

const MB = 1024 * 1024;

test('tcp flow control: a stalled host side closes the guest window; a stalled guest pauses the host socket', { timeout: 120_000, skip: needsRoot }, async (t) => {
  const g = await startTapGuest();
  t.after(() => g.close());

  // 1. Guest -> host, host not reading.
  const SIZE = 40 * MB;
  let hostSock: net.Socket | null = null;
  let got = 0;
  const hash = crypto.createHash('sha256');
  const sink = net.createServer((c) => { hostSock = c; c.pause(); c.on('data', (d) => { got += d.length; hash.update(d); }); }).listen(0, '127.0.0.1');
  await new Promise((r) => sink.once('listening', r));
  t.after(() => { hostSock?.destroy(); sink.close(); });
  const upFile = path.join(g.dir, 'up.bin');
  fs.writeFileSync(upFile, crypto.randomBytes(SIZE));
  const upload = g.ns.exec(['sh', '-c', `timeout 60 busybox nc 10.0.2.2 ${(sink.address() as net.AddressInfo).port} < ${upFile} > /dev/null; echo rc=$?`], { timeoutMs: 70_000 });
  // the guest is stopped once qnet's window towards it is shut
  const conn = await waitFor(() => g.tcp.connections().find((c) => c.remotePort === (sink.address() as net.AddressInfo).port && c.window() < c.mss),
    { what: "the window towards the guest to close (less than a segment left)", timeoutMs: 30_000 });
  const backlog = conn.host!.backlog;
  assert.ok(backlog <= 4 * MB + 64 * 1024, `qnet buffered ${backlog} bytes for a host side that does not read`);
  assert.ok(conn.bytesOut < 12 * MB, `qnet took ${conn.bytesOut} bytes from the guest while the host read nothing`);
  hostSock!.resume();
  const r1 = await upload;
  assert.match(r1.stdout, /rc=0/, r1.stdout + r1.stderr);
  await waitFor(() => got >= SIZE, { what: 'the whole upload at the host' });
  assert.equal(got, SIZE);
  assert.equal(hash.digest('hex'), crypto.createHash('sha256').update(fs.readFileSync(upFile)).digest('hex'));

  // 2. Host -> guest, guest not reading (its nc writes into a pipe nobody drains until the test
  //    creates the file `go`: the namespace shares this file system).
  const blob = crypto.randomBytes(SIZE);
  let written = 0;
  // allowHalfOpen: the guest's nc half-closes at once (its stdin is empty); keep sending anyway
  const srcConns: net.Socket[] = [];
  const src = net.createServer({ allowHalfOpen: true }, (c) => {
    srcConns.push(c);
    const pump = () => { while (written < SIZE) { const n = Math.min(MB, SIZE - written); const ok = c.write(blob.subarray(written, written + n)); written += n; if (!ok) { c.once('drain', pump); return; } } c.end(); };
    pump();
  }).listen(0, '127.0.0.1');
  await new Promise((r) => src.once('listening', r));
  t.after(() => { srcConns.forEach((c) => c.destroy()); src.close(); });
  const downFile = path.join(g.dir, 'down.bin');
  const go = path.join(g.dir, 'go');
  const download = g.ns.exec(['sh', '-c', `timeout 60 busybox nc 10.0.2.2 ${(src.address() as net.AddressInfo).port} | (while [ ! -e ${go} ]; do sleep 0.05; done; cat > ${downFile}); echo rc=$?`], { timeoutMs: 70_000 });
  // the guest's buffers are full once it advertises a zero window
  const dconn = await waitFor(() => g.tcp.connections().find((c) => c.remotePort === (src.address() as net.AddressInfo).port && c.sndWnd === 0 && c.queued > 0),
    { what: 'the guest to shut its window', timeoutMs: 30_000 });
  assert.ok(dconn.queued <= 2 * MB + 256 * 1024, `qnet queued ${dconn.queued} bytes for a guest that does not read`);
  assert.ok(written < SIZE, 'the host wrote everything although the guest read nothing: no back-pressure');
  fs.writeFileSync(go, '');
  const r2 = await download;
  assert.match(r2.stdout, /rc=0/, r2.stdout + r2.stderr);
  const down = fs.readFileSync(downFile);
  let firstDiff = -1;
  for (let i = 0; i < Math.min(down.length, blob.length); i++) if (down[i] !== blob[i]) { firstDiff = i; break; }
  assert.equal(down.length, SIZE, `download has ${down.length} bytes (first difference at ${firstDiff}); tcp stats ${JSON.stringify(g.tcp.stats)}`);
  assert.equal(firstDiff, -1, `download differs from byte ${firstDiff}; tcp stats ${JSON.stringify(g.tcp.stats)}`);
});
