// Switch forwarding benchmark: `qnet switch` runs as its own process (as in production);
// this process plays two QEMU guests on its unix stream socket, one blasting frames to
// the other's MAC, and counts what arrives. Prints frames/s and Gbit/s per frame size.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import os from 'node:os';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qnet-bench-'));
const sock = path.join(dir, 'sw.sock');

const MAC_A = [0x52, 0x54, 0, 0, 0, 0xa];
const MAC_B = [0x52, 0x54, 0, 0, 0, 0xb];

function frame(dst: number[], src: number[], size: number): Buffer {
  const f = Buffer.alloc(size);
  Buffer.from(dst).copy(f, 0);
  Buffer.from(src).copy(f, 6);
  f.writeUInt16BE(0x88b5, 12);
  return f;
}

function batch(f: Buffer, count: number): Buffer {
  const b = Buffer.alloc((f.length + 4) * count);
  for (let i = 0; i < count; i++) {
    b.writeUInt32BE(f.length, i * (f.length + 4));
    f.copy(b, i * (f.length + 4) + 4);
  }
  return b;
}

const connect = () => new Promise<net.Socket>((resolve, reject) => {
  const s = net.connect(sock);
  s.once('connect', () => resolve(s));
  s.once('error', reject);
});

async function run(size: number): Promise<{ fps: number; gbps: number }> {
  const a = await connect();
  const b = await connect();
  // Teach the switch where B is, so A's frames are forwarded, not flooded.
  b.write(batch(frame([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], MAC_B, 60), 1));
  await new Promise((r) => setTimeout(r, 100));
  let received = 0;
  let pending = 0; // bytes of a frame not yet complete: count frames from the length prefixes
  let hdr = Buffer.alloc(0);
  b.on('data', (d: Buffer) => {
    let off = 0;
    while (off < d.length) {
      if (pending > 0) { const t = Math.min(pending, d.length - off); pending -= t; off += t; if (pending === 0) received++; continue; }
      const need = 4 - hdr.length;
      const take = d.subarray(off, off + need);
      hdr = Buffer.concat([hdr, take]);
      off += take.length;
      if (hdr.length === 4) { pending = hdr.readUInt32BE(0); hdr = Buffer.alloc(0); if (pending === 0) received++; }
    }
  });
  const chunk = batch(frame(MAC_B, MAC_A, size), Math.max(1, Math.floor(256 * 1024 / (size + 4))));
  let running = true;
  const pump = () => { while (running && a.write(chunk)); };
  a.on('drain', pump);
  await new Promise((r) => setTimeout(r, 300)); // warm-up
  const t0 = process.hrtime.bigint();
  const r0 = received;
  pump();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const frames = received - r0;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  running = false;
  a.destroy();
  b.destroy();
  await new Promise((r) => setTimeout(r, 200));
  return { fps: frames / secs, gbps: (frames * size * 8) / secs / 1e9 };
}

const child = spawn(process.execPath, [path.join(root, 'bin/qnet.js'), 'switch', '--listen', `unix:${sock}`], {
  stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, QNET_LOG: 'warn' },
});
try {
  for (let i = 0; i < 100 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  console.log(`qnet switch forwarding between two unix stream ports, ${SECONDS}s per size`);
  for (const size of [64, 1500]) {
    const r = await run(size);
    console.log(`  ${String(size).padStart(5)}-byte frames: ${(r.fps / 1e6).toFixed(3)} Mframes/s  ${r.gbps.toFixed(2)} Gbit/s`);
  }
} finally {
  child.kill('SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
}
