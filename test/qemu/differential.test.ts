// Differential test against the real QEMU: for every table case QEMU can start
// without privileges, QEMU's accept/reject verdict must equal qnet's lint
// verdict, and QEMU must accept what `convert` prints.
//
// Safety: only cases whose sockets stay on loopback (127.0.0.1, localhost or
// UNIX paths) run; no tap/bridge/vde/vhost/l2tpv3/vfio and no fd= or smb=.
// The VM is started with -S so no guest code ever runs, and every QEMU this
// test spawns is killed as soon as its verdict is known.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CASES, type Case } from './cases.ts';
import { shellJoin, shellSplit, stripProgram, tokenize } from '../../src/qemu/args.ts';
import { lint } from '../../src/qemu/lint.ts';
import { convert } from '../../src/qemu/convert.ts';
import { adopt } from '../../src/qemu/adopt.ts';
import { parseQemuOpts } from '../../src/qemu/opts.ts';
import { waitFor } from '../helpers/wait.ts';

const QEMU = 'qemu-system-x86_64';
const haveQemu = spawnSync(QEMU, ['--version'], { stdio: 'ignore' }).status === 0;

const UNSAFE_BACKENDS = /^(tap|bridge|vde|vhost-user|vhost-vdpa|l2tpv3)$/;
const LOOPBACK_HOST = /^(127\.0\.0\.1|localhost)$/;

/** Network options (and the machine) of a case, or why it can't run here. */
export function reduce(c: Case): { argv: string[] } | { skip: string } {
  const argv = stripProgram(shellSplit(c.args)).args;
  const out: string[] = [];
  let machine = false;
  for (const t of tokenize(argv)) {
    if (t.kind === 'missing') { out.push(t.written); continue; }
    if (t.kind === 'other') {
      if (t.dash) return { skip: 'odd dash: QEMU would read it as a disk image' };
      if (t.positional && /=/.test(t.args[0])) return { skip: 'stray argument: QEMU would read it as a disk image' };
      if (t.name === 'M' || t.name === 'machine') { machine = true; out.push(...t.args); }
      if (t.name === 'chardev') return { skip: 'needs a chardev peer' };
      continue;
    }
    if (t.dash) return { skip: 'odd dash' };
    const entries = parseQemuOpts(t.value, { impliedKey: t.name === 'device' ? 'driver' : 'type' }).entries;
    const val = (k: string) => entries.filter((e) => e.key === k).map((e) => e.value);
    const type = val(t.name === 'device' ? 'driver' : 'type')[0] ?? '';
    if (t.name !== 'device' && UNSAFE_BACKENDS.test(type)) return { skip: `${type} needs privileges or host services` };
    if (t.name === 'device' && type === 'vfio-pci') return { skip: 'vfio needs a host device' };
    if (val('fd').length || val('fds').length || val('smb').length) return { skip: 'fd=/smb= depend on the host' };
    for (const g of val('guestfwd')) if (!/-cmd:/.test(g)) return { skip: 'guestfwd to a chardev connects at start-up' };
    for (const h of val('hostfwd')) if (!/^(tcp|udp)?:127\.0\.0\.1:/.test(h)) return { skip: 'hostfwd on a non-loopback address' };
    for (const k of ['listen', 'connect', 'udp', 'localaddr']) {
      for (const v of val(k)) if (!LOOPBACK_HOST.test(v.slice(0, v.lastIndexOf(':') < 0 ? v.length : v.lastIndexOf(':')))) return { skip: `${k}= not on loopback` };
    }
    if (val('mcast').length && !val('localaddr').every((v) => v === '127.0.0.1')) return { skip: 'multicast not pinned to loopback' };
    if (val('mcast').length && !val('localaddr').length) return { skip: 'multicast not pinned to loopback' };
    for (const e of entries) {
      if (/\.host$/.test(e.key) && !LOOPBACK_HOST.test(e.value)) return { skip: `${e.key} not on loopback` };
    }
    out.push(t.written, t.value);
  }
  if (!machine) out.unshift('-M', 'q35');
  return { argv: out };
}

let seq = 0;
type Verdict = 'accept' | 'reject' | 'no-answer';
/** A QEMU that neither answers QMP nor exits within this long has hung: a verdict of its own. */
const HANG_MS = 30_000;

/**
 * Start QEMU paused: 'accept' once QMP answers a command (start-up finished), 'reject' if it
 * exits non-zero first, 'no-answer' if it does neither in HANG_MS (never taken for agreement).
 * Resolves only once that QEMU is gone, so the next one can bind the same ports.
 */
function runQemuOnce(dir: string, args: string[]): Promise<{ verdict: Verdict; stderr: string }> {
  const sock = join(dir, `q${seq++}.sock`);
  const child = spawn(QEMU, ['-S', '-display', 'none', '-nodefaults', '-monitor', 'none', '-qmp', `unix:${sock},server=on,wait=off`, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const gone = new Promise<void>((r) => child.once('close', () => r()));
  return new Promise((resolve) => {
    let done = false;
    const finish = (verdict: Verdict) => {
      if (done) return;
      done = true;
      clearInterval(poll);
      clearTimeout(limit);
      if (child.exitCode === null) child.kill('SIGKILL');
      void gone.then(() => resolve({ verdict, stderr }));
    };
    child.on('exit', (code) => finish(code === 0 ? 'accept' : 'reject'));
    let connected = false;
    const poll = setInterval(() => {
      if (connected) return;
      const s = connect(sock);
      s.on('connect', () => { connected = true; });
      s.on('error', () => { connected = false; s.destroy(); });
      // The greeting can come from the monitor thread before start-up is done;
      // command replies come from the main loop, which runs only once it is.
      let buf = '';
      s.on('data', (d) => {
        buf += String(d);
        if (buf.includes('"QMP"') && !buf.includes('sent')) {
          buf += 'sent';
          s.write('{"execute":"qmp_capabilities"}\n{"execute":"query-status"}\n');
        }
        if (/"status"\s*:/.test(buf)) { s.destroy(); finish('accept'); }
      });
    }, 60);
    const limit = setTimeout(() => finish('no-answer'), HANG_MS);
  });
}

/** TCP/UDP ports on loopback that a case's options bind or connect to. */
function portsOf(args: string[]): number[] {
  return [...args.join(' ').matchAll(/(?:127\.0\.0\.1|localhost):(\d+)/g)].map((m) => Number(m[1]));
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * runQemuOnce, again if QEMU could not bind a fixed loopback port that something else on this
 * machine holds for a moment (another test run): after that port is free again.
 */
async function runQemu(dir: string, args: string[]): Promise<{ verdict: Verdict; stderr: string }> {
  for (let attempt = 1; ; attempt++) {
    const r = await runQemuOnce(dir, args);
    if (r.verdict !== 'reject' || !/Address already in use/.test(r.stderr) || attempt === 3) return r;
    for (const p of portsOf(args)) {
      await waitFor(() => portFree(p), { what: `loopback port ${p} to be free`, timeoutMs: 20_000, intervalMs: 100 });
    }
  }
}

/** Run fn over items, two at a time, never two at once whose loopback ports overlap. */
async function inPairs<T>(items: T[], ports: (x: T) => number[], fn: (x: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  const busy = new Set<number>();
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = queue.findIndex((x) => ports(x).every((p) => !busy.has(p)));
      if (i < 0) {
        if (queue.length === 0) return;
        await waitFor(() => queue.some((x) => ports(x).every((p) => !busy.has(p))) || queue.length === 0, { what: 'a case whose ports are free', timeoutMs: 120_000 });
        continue;
      }
      const [x] = queue.splice(i, 1);
      const mine = ports(x);
      mine.forEach((p) => busy.add(p));
      try { await fn(x); } finally { mine.forEach((p) => busy.delete(p)); }
    }
  };
  await Promise.all([worker(), worker()]);
}

test('QEMU and qnet agree on every case QEMU can start here', { skip: !haveQemu && `${QEMU} not installed`, timeout: 180_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-diff-'));
  const runnable: Array<{ c: Case; argv: string[] }> = [];
  const skipped: string[] = [];
  for (const c of CASES) {
    const r = reduce(c);
    if ('skip' in r) skipped.push(`${c.name}: ${r.skip}`);
    else runnable.push({ c, argv: r.argv });
  }
  const mismatches: string[] = [];
  const convertRejected: string[] = [];
  const hung: string[] = [];
  let agreed = 0, converted = 0;
  try {
    await inPairs(runnable, ({ argv }) => portsOf(argv), async ({ c, argv }) => {
      const mine = lint(argv);
      const q = await runQemu(dir, argv);
      if (q.verdict === 'no-answer') {
        hung.push(`${c.name}\n    qemu ${shellJoin(argv)}\n    neither answered QMP nor exited in ${HANG_MS / 1000} s`);
        return;
      }
      if ((q.verdict === 'accept') !== mine.ok) {
        mismatches.push(`${c.name}\n    qemu ${shellJoin(argv)}\n    QEMU: ${q.verdict} ${q.stderr.trim().split('\n')[0] ?? ''}\n    qnet: ${mine.ok ? 'ok' : mine.diagnostics.filter((d) => d.severity === 'error').map((d) => d.message).join('; ')}`);
        return;
      }
      agreed++;
      if (!mine.ok || mine.help) return;
      for (const to of ['netdev', 'nic'] as const) {
        const conv = convert(argv, to);
        if (!conv.ok) { convertRejected.push(`${c.name}: convert --to ${to} refused`); continue; }
        if (shellJoin(conv.args!) === shellJoin(argv)) continue;
        const r = await runQemu(dir, conv.args!);
        converted++;
        if (r.verdict !== 'accept') convertRejected.push(`${c.name} (--to ${to}): ${r.verdict}\n    qemu ${shellJoin(conv.args!)}\n    ${r.stderr.trim()}`);
      }
      // adopt's rewrite (stream clients of qnet sockets that don't exist yet) must start too.
      const ad = adopt(argv, { socketDir: dir });
      if (ad.ok && ad.services.length) {
        const r = await runQemu(dir, ad.args!);
        converted++;
        if (r.verdict !== 'accept') convertRejected.push(`${c.name} (adopt): ${r.verdict}\n    qemu ${shellJoin(ad.args!)}\n    ${r.stderr.trim()}`);
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  t.diagnostic(`runnable ${runnable.length}, agreed ${agreed}, converted forms started ${converted}, skipped ${skipped.length}`);
  assert.ok(runnable.length >= 60, `only ${runnable.length} cases could run`);
  assert.deepEqual(hung, [], `QEMU hung (no verdict):\n${hung.join('\n')}`);
  assert.deepEqual(mismatches, [], `verdicts differ:\n${mismatches.join('\n')}`);
  assert.deepEqual(convertRejected, [], `QEMU rejected converted forms:\n${convertRejected.join('\n')}`);
});
