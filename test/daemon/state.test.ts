// The daemon's state file is written atomically (README: "State ... lives in stateDir and is
// written atomically"): a new file replaces the old one whole, so a reader, or a daemon
// starting after a crash, finds either the old state or the new one, never a mix or half.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { StateStore } from '../../src/daemon/state.ts';
import { makeTempDir } from '../helpers/cleanup.ts';

const stateModule = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/daemon/state.ts');

/** A state with `n` leases (about 100 bytes each), all stamped `gen`. */
function fill(s: StateStore, n: number, gen: number): void {
  const net = s.net('lab');
  net.leases = Array.from({ length: n }, (_, i) => ({ mac: `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, ip: `10.${gen & 255}.${i >> 8}.${i & 255}`, expiresAt: gen }));
}

test('state: a save replaces the file (a new inode), leaves no temp file, and the old contents stay whole', () => {
  const dir = makeTempDir('state-');
  const s = new StateStore(dir.path);
  fill(s, 100, 1);
  s.save();
  const file = path.join(dir.path, 'state.json');
  const first = fs.readFileSync(file, 'utf8');
  const fd = fs.openSync(file, 'r'); // holds the old file, as a reader in the middle of it would
  const ino = fs.fstatSync(fd).ino;
  fill(s, 200, 2);
  s.save();
  assert.notEqual(fs.statSync(file).ino, ino, 'the path names a new file (written aside, then renamed over the old one)');
  const old = Buffer.alloc(first.length + 10);
  const n = fs.readSync(fd, old, 0, old.length, 0);
  fs.closeSync(fd);
  assert.equal(old.subarray(0, n).toString(), first, 'the old file was not rewritten in place');
  assert.deepEqual(fs.readdirSync(dir.path), ['state.json'], 'no temp file is left');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  const again = new StateStore(dir.path).load();
  assert.equal(again.networks.lab.leases.length, 200);
  dir.remove();
});

// A writer saving a large state over and over, and this process reading the file meanwhile:
// every read must be a whole state of one generation.
const WRITER = `
import { StateStore } from ${JSON.stringify(stateModule)};
const [dir, rounds] = process.argv.slice(2);
const s = new StateStore(dir);
for (let gen = 1; gen <= Number(rounds); gen++) {
  s.net('lab').leases = Array.from({ length: 4000 }, (_, i) => ({ mac: '52:54:00:00:00:00', ip: '10.0.' + (i >> 8) + '.' + (i & 255), expiresAt: gen }));
  s.save();
}
console.log('done');
`;

test('state: a reader never sees a partly written state, however the writes and reads interleave', { timeout: 120_000 }, async () => {
  const dir = makeTempDir('state-race-');
  const script = path.join(dir.path, 'writer.mts');
  fs.writeFileSync(script, WRITER);
  const stateDir = path.join(dir.path, 'state');
  const file = path.join(stateDir, 'state.json');
  const child = spawn(process.execPath, ['--import', 'tsx', script, stateDir, '60'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  const exited = new Promise<number | null>((r) => child.on('close', r));
  let done = false;
  void exited.then(() => { done = true; });
  let reads = 0;
  const gens = new Set<number>();
  const bad: string[] = [];
  while (!done) {
    let text: string;
    try { text = fs.readFileSync(file, 'utf8'); } catch { await new Promise((r) => setImmediate(r)); continue; }
    reads++;
    try {
      const st = JSON.parse(text) as { networks: { lab: { leases: { expiresAt: number }[] } } };
      const ls = st.networks.lab.leases;
      const g = ls[0].expiresAt;
      if (ls.length !== 4000 || ls.some((l) => l.expiresAt !== g)) bad.push(`a mixed state: ${ls.length} leases`);
      gens.add(g);
    } catch (e) {
      bad.push(`${(e as Error).message} (${text.length} bytes)`);
    }
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(await exited, 0);
  assert.equal(out.trim(), 'done');
  assert.deepEqual(bad.slice(0, 5), [], `${bad.length} of ${reads} reads saw a broken state`);
  // the reads really overlapped the writes: several generations were seen
  assert.ok(gens.size >= 3, `only generations ${[...gens].join(',')} seen in ${reads} reads`);
  dir.remove();
});
