// User-mode network benchmark: `qnet user` against QEMU's built-in `-netdev user` (slirp).
//
// The guest is a Linux network namespace with a tap device (10.0.2.15/24, default route via
// 10.0.2.2). A QEMU with no machine (-M none) relays the tap through a hub to either
//   qnet:  -netdev stream (unix socket) -> `qnet user` (its own node process), or
//   slirp: -netdev user (QEMU's libslirp, inside the same QEMU process).
// Each case gets a fresh namespace holding everything: tap, QEMU, qnet (for the qnet case),
// the "host" servers on 127.0.0.1 (what the guest reaches as 10.0.2.2) and the guest-side
// load generator. Both cases thus use identical loopback servers and the same kernel paths;
// the only difference is what turns guest frames into host sockets.
//
// Measured per case, one at a time (the machine may have 2 cores):
//   - memory of 1,000 idle TCP connections (process VmRSS, and the V8 heap for qnet, before
//     and after the guest opens 1,000 connections to a host listener; measured first, on a
//     fresh process)
//   - bulk TCP guest->host and host->guest (Gbit/s, one connection, MTU 1500)
//   - TCP connections per second (connect, 1 byte from the host, FIN both ways; 8 in parallel)
//   - request/response round trips per second (1-byte ping-pong over one connection)
//
// Needs root (namespaces, tap). Touches nothing outside the namespaces it creates.
// Environment:
//   BENCH_SECONDS=3        duration of each bulk transfer (connections/s and RR: 3 s)
//   BENCH_ONLY=qnet|slirp  run one case only
//   BENCH_TESTS=mem,up,down,conns,rr   subset of the measurements
//   BENCH_PROFILE=DIR      run qnet with --cpu-prof into DIR and print its top functions
//   BENCH_QNET=PATH        qnet entry point to run (default: this checkout's src/cli/main.ts)
//   BENCH_REPEAT=N         bulk transfers per direction and case; the median is reported (default 3)
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createNetns, tap, cleanupNetns, type Netns } from '../test/helpers/netns.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PEER = path.join(root, 'bench', 'user-peer.ts');
const MEMPROBE = pathToFileURL(path.join(root, 'bench', 'user-memprobe.ts')).href;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const REPEAT = Math.max(1, Number(process.env.BENCH_REPEAT ?? 3));
const PROFILE = process.env.BENCH_PROFILE ? path.resolve(process.env.BENCH_PROFILE) : '';
const TESTS = new Set((process.env.BENCH_TESTS ?? 'mem,up,down,conns,rr').split(','));
const CASES = (process.env.BENCH_ONLY ? [process.env.BENCH_ONLY] : ['qnet', 'slirp']) as Kind[];
const IDLE_CONNS = 1000;
const QEMU = process.env.QEMU ?? 'qemu-system-x86_64';
/** qnet's entry point (override to compare another checkout). */
const QNET_MAIN = path.resolve(process.env.BENCH_QNET ?? path.join(root, 'src', 'cli', 'main.ts'));

type Kind = 'qnet' | 'slirp';

interface Mem { rss: number; heapUsed?: number }
/** CPU seconds used during one bulk transfer, per process, and the transfer's size. */
interface Bulk { gbps: number; bytes: number; seconds: number; cpu: Record<string, number>; idle: number }
interface CaseResult {
  up?: number;
  down?: number;
  upRuns?: Bulk[];
  downRuns?: Bulk[];
  conns?: { perSecond: number; ok: number; failed: number; errors: Record<string, number>; p50ms: number | null };
  rr?: { perSecond: number; usPerRoundTrip: number };
  mem?: { before: Mem; after: Mem; held: number; openSeconds: number };
  stats?: unknown;
}

function log(msg: string): void {
  process.stderr.write(`[bench:user] ${msg}\n`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A line reader over a child's stream that can wait for a matching line. */
class Lines {
  private buf: string[] = [];
  private waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  readonly all: string[] = [];
  constructor(stream: NodeJS.ReadableStream | null) {
    if (!stream) return;
    readline.createInterface({ input: stream }).on('line', (l) => {
      this.all.push(l);
      const i = this.waiters.findIndex((w) => w.re.test(l));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(l);
      else this.buf.push(l);
    });
  }
  wait(re: RegExp, ms: number, what: string, child?: ChildProcess): Promise<string> {
    const i = this.buf.findIndex((l) => re.test(l));
    if (i >= 0) return Promise.resolve(this.buf.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const w = { re, resolve: (l: string) => { clearTimeout(t); child?.off('exit', onExit); resolve(l); } };
      const onExit = (code: number | null): void => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(t);
        reject(new Error(`${what}: process exited (${code}) first`));
      };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        child?.off('exit', onExit);
        reject(new Error(`${what}: timed out after ${ms} ms`));
      }, ms);
      child?.once('exit', onExit);
      this.waiters.push(w);
    });
  }
}

function nodeArgs(script: string, ...args: string[]): string[] {
  return [process.execPath, '--import', 'tsx', script, ...args];
}

/** Run a guest-side client to completion; its last stdout line is its JSON result. */
async function client<T>(ns: Netns, args: string[], timeoutMs = 60_000): Promise<T> {
  const child = ns.spawn(nodeArgs(PEER, 'client', ...args), { cwd: root });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => { stdout += d; });
  child.stderr?.on('data', (d) => { stderr += d; });
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  clearTimeout(t);
  if (code !== 0) throw new Error(`client ${args.join(' ')} failed (${code}): ${stderr.trim()}`);
  const last = stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as T;
}

function vmRssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** utime + stime of a process (all its threads), in seconds. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15, in clock ticks (USER_HZ = 100)
}

/** Jiffies of the whole machine: [idle (incl. iowait), total]. */
function machineTicks(): [number, number] {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return [f[3] + f[4], f.reduce((a, b) => a + b, 0)];
}

/** Run one bulk transfer and account the CPU time the relay processes used meanwhile. */
async function bulk(env: Env, args: string[]): Promise<Bulk> {
  const before = Object.fromEntries(Object.entries(env.cpuPids).map(([k, pid]) => [k, cpuSeconds(pid)]));
  const [idle0, total0] = machineTicks();
  const r = await client<{ gbps: number; bytes: number; seconds: number }>(env.ns, args);
  const [idle1, total1] = machineTicks();
  const cpu = Object.fromEntries(Object.entries(env.cpuPids).map(([k, pid]) => [k, cpuSeconds(pid) - before[k]]));
  return { ...r, cpu, idle: (idle1 - idle0) / Math.max(1, total1 - total0) };
}

function comm(pid: number): string {
  try { return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return '?'; }
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => { clearTimeout(t); resolve(true); });
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One side of the comparison, set up and idle: guest namespace, servers, QEMU (and qnet). */
interface Env {
  kind: Kind;
  ns: Netns;
  /** the process whose memory is measured: qnet, or the QEMU running slirp */
  pid: number;
  /** processes whose CPU time is reported for bulk transfers */
  cpuPids: Record<string, number>;
  probe(): Promise<Mem>;
  stats(): Promise<unknown>;
  close(): Promise<void>;
}

async function setup(kind: Kind, tmp: string): Promise<Env> {
  const ns = await createNetns();
  let qnet: ChildProcess | undefined;
  let qnetErr: Lines | undefined;
  let qnetOut: Lines | undefined;
  const close = async (): Promise<void> => {
    // qnet exits cleanly on SIGINT (so --cpu-prof can write its profile); then everything else goes.
    if (qnet && qnet.exitCode === null && qnet.signalCode === null) {
      qnet.kill('SIGINT');
      if (!(await waitExit(qnet, 10_000))) log('qnet did not exit on SIGINT');
    }
    await ns.delete();
  };
  try {
    // The guest: a tap in the namespace, 10.0.2.15/24 behind gateway 10.0.2.2 (slirp's addressing).
    await ns.sysctl('net.ipv6.conf.all.disable_ipv6', '1');
    await ns.sysctl('net.ipv6.conf.default.disable_ipv6', '1');
    const dev = await tap(ns, { addr: '10.0.2.15/24', mtu: 1500 });
    await ns.addRoute('default', { via: '10.0.2.2' });

    // The host side: loopback servers inside the same namespace.
    const servers = ns.spawn(nodeArgs(PEER, 'server', String(SECONDS)), { cwd: root });
    servers.stderr?.on('data', (d) => process.stderr.write(`[servers] ${d}`));
    await new Lines(servers.stdout).wait(/"ready"/, 20_000, 'servers', servers);

    let netdev: string[];
    if (kind === 'qnet') {
      const sock = path.join(tmp, `qnet-${ns.name}.sock`);
      const flags = ['--expose-gc', '--import', 'tsx', '--import', MEMPROBE];
      if (PROFILE) {
        fs.mkdirSync(PROFILE, { recursive: true });
        flags.push('--cpu-prof', `--cpu-prof-dir=${PROFILE}`);
      }
      qnet = ns.spawn([process.execPath, ...flags, QNET_MAIN, 'user',
        'net=10.0.2.0/24,restrict=off,dnsupstream=127.0.0.1:53', '--listen', `unix:${sock}`], { cwd: root });
      qnetOut = new Lines(qnet.stdout);
      qnetErr = new Lines(qnet.stderr);
      await qnetOut.wait(/^qnet user: network/, 20_000, 'qnet start', qnet);
      netdev = ['-netdev', `stream,id=s0,server=off,addr.type=unix,addr.path=${sock}`];
    } else {
      netdev = ['-netdev', 'user,id=s0,net=10.0.2.0/24,restrict=off'];
    }
    const qemu = ns.spawn([QEMU, '-M', 'none', '-nodefaults', '-display', 'none',
      '-netdev', `tap,id=t0,ifname=${dev},script=no,downscript=no`,
      '-netdev', 'hubport,id=h0,hubid=0,netdev=t0',
      ...netdev,
      '-netdev', 'hubport,id=h1,hubid=0,netdev=s0'], { cwd: root });
    let qemuErr = '';
    qemu.stderr?.on('data', (d) => { qemuErr += d; });
    qemu.once('exit', (code) => { if (code !== null && code !== 0) log(`QEMU exited ${code}: ${qemuErr.trim()}`); });

    await client(ns, ['wait', '20'], 30_000);
    const pid = kind === 'qnet' ? qnet!.pid! : qemu.pid!;
    const want = kind === 'qnet' ? 'node' : 'qemu-system-x86';
    if (!comm(pid).startsWith(want)) throw new Error(`pid ${pid} is '${comm(pid)}', expected ${want}`);

    return {
      kind, ns, pid, close,
      cpuPids: kind === 'qnet' ? { qnet: qnet!.pid!, qemu: qemu.pid!, servers: servers.pid! } : { 'qemu+slirp': qemu.pid!, servers: servers.pid! },
      async probe(): Promise<Mem> {
        if (kind !== 'qnet') return { rss: vmRssBytes(pid) };
        const line = qnetErr!.wait(/^MEMPROBE /, 10_000, 'memprobe', qnet);
        process.kill(pid, 'SIGUSR2');
        const m = JSON.parse((await line).slice('MEMPROBE '.length)) as { heapUsed: number };
        return { rss: vmRssBytes(pid), heapUsed: m.heapUsed };
      },
      async stats(): Promise<unknown> {
        if (!qnet) return undefined;
        const line = qnetOut!.wait(/^\{/, 5_000, 'qnet stats', qnet).catch(() => null);
        process.kill(pid, 'SIGUSR1');
        const l = await line;
        return l ? JSON.parse(l) : undefined;
      },
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Memory of IDLE_CONNS idle guest connections: the process's footprint before and after. */
async function measureMemory(env: Env): Promise<CaseResult['mem']> {
  await sleep(300);
  const before = await env.probe();
  const holder = env.ns.spawn(nodeArgs(PEER, 'client', 'hold', String(IDLE_CONNS)), { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
  let herr = '';
  holder.stderr?.on('data', (d) => { herr += d; });
  const held = JSON.parse(await new Lines(holder.stdout).wait(/"held"/, 60_000, 'hold', holder).catch((e: Error) => {
    throw new Error(`${e.message}: ${herr.trim()}`);
  })) as { held: number; seconds: number };
  await sleep(500);
  const after = await env.probe();
  holder.stdin?.end('close\n');
  await waitExit(holder, 10_000);
  await sleep(500);
  return { before, after, held: held.held, openSeconds: held.seconds };
}

/**
 * Set up every case, then run each measurement on each case in turn (qnet, slirp, qnet, ...),
 * so that load from elsewhere on the machine affects both sides alike.
 */
async function runAll(tmp: string): Promise<Partial<Record<Kind, CaseResult>>> {
  const envs: Env[] = [];
  const results: Partial<Record<Kind, CaseResult>> = {};
  try {
    for (const kind of CASES) {
      log(`setting up ${kind}`);
      envs.push(await setup(kind, tmp));
      results[kind] = {};
    }
    const each = async (what: string, f: (env: Env, r: CaseResult) => Promise<void>): Promise<void> => {
      for (const env of envs) {
        log(`${env.kind}: ${what}`);
        await f(env, results[env.kind]!);
      }
    };
    if (TESTS.has('mem')) await each(`${IDLE_CONNS} idle connections`, async (env, r) => { r.mem = await measureMemory(env); });
    for (let i = 0; i < REPEAT; i++) {
      if (TESTS.has('up')) {
        await each(`bulk guest->host, ${SECONDS} s`, async (env, r) => {
          (r.upRuns ??= []).push(await bulk(env, ['up', String(SECONDS)]));
        });
      }
      if (TESTS.has('down')) {
        await each(`bulk host->guest, ${SECONDS} s`, async (env, r) => {
          (r.downRuns ??= []).push(await bulk(env, ['down']));
        });
      }
    }
    for (const r of Object.values(results)) {
      if (r?.upRuns) r.up = median(r.upRuns.map((b) => b.gbps));
      if (r?.downRuns) r.down = median(r.downRuns.map((b) => b.gbps));
    }
    if (TESTS.has('conns')) await each('connections/s, 3 s', async (env, r) => { r.conns = await client(env.ns, ['conns', '3', '8']); });
    if (TESTS.has('rr')) await each('request/response, 3 s', async (env, r) => { r.rr = await client(env.ns, ['rr', '3']); });
    for (const env of envs) {
      const st = await env.stats();
      if (st) results[env.kind]!.stats = st;
    }
  } finally {
    for (const env of envs) await env.close();
  }
  return results;
}

// ---------------------------------------------------------------------------- profile summary

interface ProfNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }
interface Profile { nodes: ProfNode[]; samples: number[]; timeDeltas: number[] }

/** Self time per function in a .cpuprofile, busiest first. */
export function summariseProfile(file: string, top = 25): string {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]);
    if (!n) continue;
    const dt = p.timeDeltas[i] ?? 0;
    total += dt;
    const cf = n.callFrame;
    const where = cf.url ? `${cf.url.replace(/^file:\/\/\/?/, '/').replace(root + '/', '')}:${cf.lineNumber + 1}` : '';
    const key = `${cf.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const idle = self.get('(idle)') ?? 0;
  const busy = total - idle;
  const rows = [...self.entries()].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, top);
  const lines = [`profile ${path.basename(file)}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy`,
    '  self ms   % busy  function'];
  for (const [k, v] of rows) lines.push(`${(v / 1000).toFixed(0).padStart(9)}  ${((100 * v) / busy).toFixed(1).padStart(6)}%  ${k}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------- main

function fmt(v: number | undefined, digits: number): string {
  return v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`;
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    log('needs root (network namespaces and tap devices); skipping');
    return 1;
  }
  const watchdog = setTimeout(() => {
    log('took longer than 5 minutes; giving up');
    void cleanupNetns().finally(() => process.exit(1));
  }, 300_000);
  watchdog.unref();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qnet-bench-user-'));
  const started = performance.now();
  let results: Partial<Record<Kind, CaseResult>> = {};
  const profBefore = PROFILE && fs.existsSync(PROFILE) ? new Set(fs.readdirSync(PROFILE)) : new Set<string>();
  try {
    results = await runAll(tmp);
  } finally {
    await cleanupNetns();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  if (PROFILE) {
    for (const f of fs.readdirSync(PROFILE)) {
      if (f.endsWith('.cpuprofile') && !profBefore.has(f)) process.stdout.write(summariseProfile(path.join(PROFILE, f)) + '\n\n');
    }
  }
  const q = results.qnet ?? {};
  const s = results.slirp ?? {};
  const perK = (r: CaseResult, f: (m: Mem) => number | undefined): number | undefined => {
    if (!r.mem) return undefined;
    const a = f(r.mem.after), b = f(r.mem.before);
    return a === undefined || b === undefined ? undefined : ((a - b) / r.mem.held) * 1000 / 1024; // KiB per 1,000 -> MiB
  };
  const mib = (v: number | undefined): number | undefined => (v === undefined ? undefined : v / 1024);
  const rows: [string, string, string, string][] = [
    ['TCP guest->host, Gbit/s', fmt(q.up, 3), fmt(s.up, 3), ratio(q.up, s.up)],
    ['TCP host->guest, Gbit/s', fmt(q.down, 3), fmt(s.down, 3), ratio(q.down, s.down)],
    ['TCP connections/s', fmt(q.conns?.perSecond, 0), fmt(s.conns?.perSecond, 0), ratio(q.conns?.perSecond, s.conns?.perSecond)],
    ['TCP RR/s (1 byte ping-pong)', fmt(q.rr?.perSecond, 0), fmt(s.rr?.perSecond, 0), ratio(q.rr?.perSecond, s.rr?.perSecond)],
    [`RSS per ${IDLE_CONNS} idle conns, MiB`, fmt(mib(perK(q, (m) => m.rss)), 2), fmt(mib(perK(s, (m) => m.rss)), 2), ratio(perK(q, (m) => m.rss), perK(s, (m) => m.rss))],
    [`heap per ${IDLE_CONNS} idle conns, MiB`, fmt(mib(perK(q, (m) => m.heapUsed)), 2), '-', '-'],
  ];
  const w = [32, 10, 10, 8];
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const out: string[] = [];
  out.push(`qnet user vs QEMU -netdev user (slirp): tap guest in a netns, QEMU hub relay, MTU 1500, ${os.cpus().length} CPUs`);
  out.push(line(['measure', 'qnet', 'slirp', 'ratio']));
  out.push(line(w.map((n) => '-'.repeat(n))));
  for (const r of rows) out.push(line(r));
  // Each bulk run: Gbit/s, and the CPU each process used per second of transfer (1.00 = one core).
  const runs = (b: Bulk[] | undefined): string => (b ?? []).map((x) =>
    `${x.gbps.toFixed(2)} (${Object.entries(x.cpu).map(([k, v]) => `${k} ${(v / x.seconds).toFixed(2)}`).join(', ')}; machine ${(100 * x.idle).toFixed(0)}% idle)`).join('; ');
  for (const [k, r] of Object.entries(results)) {
    if (r?.upRuns) out.push(`${k} guest->host runs, Gbit/s (CPU cores used): ${runs(r.upRuns)}`);
    if (r?.downRuns) out.push(`${k} host->guest runs, Gbit/s (CPU cores used): ${runs(r.downRuns)}`);
  }
  for (const [k, r] of Object.entries(results)) {
    if (r?.mem) {
      const m = r.mem;
      out.push(`${k}: RSS ${(m.before.rss / 2 ** 20).toFixed(1)} -> ${(m.after.rss / 2 ** 20).toFixed(1)} MiB` +
        (m.before.heapUsed !== undefined ? `, heap ${(m.before.heapUsed / 2 ** 20).toFixed(1)} -> ${(m.after.heapUsed! / 2 ** 20).toFixed(1)} MiB` : '') +
        ` with ${m.held} idle connections (opened in ${m.openSeconds.toFixed(2)} s)`);
    }
    if (r?.conns) out.push(`${k}: ${r.conns.ok} connections, ${r.conns.failed} failed${r.conns.failed ? ` ${JSON.stringify(r.conns.errors)}` : ''}, median ${fmt(r.conns.p50ms ?? undefined, 2)} ms each (8 in parallel)`);
    if (r?.rr) out.push(`${k}: ${fmt(r.rr.usPerRoundTrip, 1)} us per round trip`);
  }
  const target = (v: number | undefined, b: number | undefined): boolean => v !== undefined && b !== undefined && v >= 1.5 * b;
  if (q.up !== undefined && s.up !== undefined && q.down !== undefined && s.down !== undefined) {
    out.push(`target (>= 1.5x slirp in both directions): ${target(q.up, s.up) && target(q.down, s.down) ? 'met' : 'NOT met'}`);
  }
  out.push(`(${((performance.now() - started) / 1000).toFixed(0)} s)`);
  process.stdout.write(out.join('\n') + '\n');
  if (process.env.BENCH_STATS && q.stats) process.stdout.write(JSON.stringify(q.stats) + '\n');
  return 0;
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    process.stderr.write(`bench:user: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    await cleanupNetns().catch(() => {});
    process.exit(1);
  },
);
