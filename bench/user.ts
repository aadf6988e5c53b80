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
// Cases: qnet and slirp at MTU 1500 (IPv4 and IPv6 on the same tap), and qnet at MTU 9000
// (`qnet user mtu=9000`; slirp has no MTU option, so its 1500 figure is the comparison).
// Measured per case, one at a time (the machine may have 2 cores):
//   - memory of 1,000 idle TCP connections (process VmRSS, and the V8 heap for qnet, before
//     and after the guest opens 1,000 connections to a host listener; measured first, on a
//     fresh process)
//   - bulk TCP guest->host and host->guest (Gbit/s, one connection), and the CPU seconds per
//     GB moved that the relay processes used (qnet + the relay QEMU, or QEMU with slirp)
//   - the same over IPv6 (fec0::15 -> fec0::2 -> the host's ::1) at MTU 1500
//   - TCP connections per second (connect, 1 byte from the host, FIN both ways; 8 in parallel)
//   - request/response round trips per second (1-byte ping-pong over one connection)
//
// Needs root (namespaces, tap). Touches nothing outside the namespaces it creates.
// Environment:
//   BENCH_SECONDS=3        duration of each bulk transfer (connections/s and RR: 3 s)
//   BENCH_ONLY=qnet|slirp|qnet-9000  run one case only
//   BENCH_TESTS=mem,up,down,up6,down6,conns,rr   subset of the measurements
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
const TESTS = new Set((process.env.BENCH_TESTS ?? 'mem,up,down,up6,down6,conns,rr').split(','));
type CaseName = 'qnet' | 'slirp' | 'qnet-9000';
const ALL_CASES: { name: CaseName; kind: Kind; mtu: number }[] = [
  { name: 'qnet', kind: 'qnet', mtu: 1500 }, { name: 'slirp', kind: 'slirp', mtu: 1500 }, { name: 'qnet-9000', kind: 'qnet', mtu: 9000 },
];
const CASES = ALL_CASES.filter((c) => !process.env.BENCH_ONLY || c.name === process.env.BENCH_ONLY);
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
  up6?: number;
  down6?: number;
  up6Runs?: Bulk[];
  down6Runs?: Bulk[];
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
async function client<T>(ns: Netns, args: string[], timeoutMs = 60_000, target?: string): Promise<T> {
  const child = ns.spawn(nodeArgs(PEER, 'client', ...args), { cwd: root, env: { ...process.env, ...(target ? { BENCH_TARGET: target } : {}) } });
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
async function bulk(env: Env, args: string[], target?: string): Promise<Bulk> {
  const before = Object.fromEntries(Object.entries(env.cpuPids).map(([k, pid]) => [k, cpuSeconds(pid)]));
  const [idle0, total0] = machineTicks();
  const r = await client<{ gbps: number; bytes: number; seconds: number }>(env.ns, args, 60_000, target);
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
  name: CaseName;
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

async function setup(name: CaseName, kind: Kind, mtu: number, tmp: string): Promise<Env> {
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
    // The guest: a tap in the namespace, 10.0.2.15/24 behind gateway 10.0.2.2 and fec0::15/64
    // behind fec0::2 (slirp's addressing; static, so no SLAAC wait). The MTU-9000 case is IPv4 only.
    const v6 = mtu === 1500;
    if (!v6) {
      await ns.sysctl('net.ipv6.conf.all.disable_ipv6', '1');
      await ns.sysctl('net.ipv6.conf.default.disable_ipv6', '1');
    }
    const dev = await tap(ns, { addr: '10.0.2.15/24', mtu });
    await ns.addRoute('default', { via: '10.0.2.2' });
    if (v6) {
      await ns.ip('-6', 'addr', 'add', 'fec0::15/64', 'dev', dev, 'nodad');
      await ns.ip('-6', 'route', 'add', 'default', 'via', 'fec0::2', 'dev', dev);
    }

    // The host side: loopback servers inside the same namespace.
    const servers = ns.spawn(nodeArgs(PEER, 'server', String(SECONDS)), { cwd: root, env: { ...process.env, ...(v6 ? { BENCH_V6: '1' } : {}) } });
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
        `net=10.0.2.0/24,restrict=off,dnsupstream=127.0.0.1:53${mtu !== 1500 ? `,mtu=${mtu}` : ''}`, '--listen', `unix:${sock}`], { cwd: root });
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
      name, kind, ns, pid, close,
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
async function runAll(tmp: string): Promise<Partial<Record<CaseName, CaseResult>>> {
  const envs: Env[] = [];
  const results: Partial<Record<CaseName, CaseResult>> = {};
  try {
    for (const c of CASES) {
      log(`setting up ${c.name}`);
      envs.push(await setup(c.name, c.kind, c.mtu, tmp));
      results[c.name] = {};
    }
    const each = async (what: string, f: (env: Env, r: CaseResult) => Promise<void>, only?: (env: Env) => boolean): Promise<void> => {
      for (const env of envs) {
        if (only && !only(env)) continue;
        log(`${env.name}: ${what}`);
        await f(env, results[env.name]!);
      }
    };
    const at1500 = (env: Env): boolean => env.name !== 'qnet-9000';
    if (TESTS.has('mem')) await each(`${IDLE_CONNS} idle connections`, async (env, r) => { r.mem = await measureMemory(env); }, at1500);
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
      if (TESTS.has('up6')) {
        await each(`bulk guest->host over IPv6, ${SECONDS} s`, async (env, r) => {
          (r.up6Runs ??= []).push(await bulk(env, ['up', String(SECONDS)], 'fec0::2'));
        }, at1500);
      }
      if (TESTS.has('down6')) {
        await each(`bulk host->guest over IPv6, ${SECONDS} s`, async (env, r) => {
          (r.down6Runs ??= []).push(await bulk(env, ['down'], 'fec0::2'));
        }, at1500);
      }
    }
    for (const r of Object.values(results)) {
      if (r?.upRuns) r.up = median(r.upRuns.map((b) => b.gbps));
      if (r?.downRuns) r.down = median(r.downRuns.map((b) => b.gbps));
      if (r?.up6Runs) r.up6 = median(r.up6Runs.map((b) => b.gbps));
      if (r?.down6Runs) r.down6 = median(r.down6Runs.map((b) => b.gbps));
    }
    if (TESTS.has('conns')) await each('connections/s, 3 s', async (env, r) => { r.conns = await client(env.ns, ['conns', '3', '8']); }, at1500);
    if (TESTS.has('rr')) await each('request/response, 3 s', async (env, r) => { r.rr = await client(env.ns, ['rr', '3']); }, at1500);
    for (const env of envs) {
      const st = await env.stats();
      if (st) results[env.name]!.stats = st;
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
  let results: Partial<Record<CaseName, CaseResult>> = {};
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
  const j = results['qnet-9000'] ?? {};
  // CPU seconds per GB moved by the relay processes (not the load generators)
  const cpuPerGB = (runs: Bulk[] | undefined): number | undefined => {
    if (!runs?.length) return undefined;
    const per = runs.map((b) => Object.entries(b.cpu).filter(([k]) => k !== 'servers').reduce((n, [, v]) => n + v, 0) / (b.bytes / 1e9));
    return median(per);
  };
  const spread = (runs: Bulk[] | undefined): string => (runs?.length ? `${Math.min(...runs.map((b) => b.gbps)).toFixed(2)}-${Math.max(...runs.map((b) => b.gbps)).toFixed(2)}` : '-');
  const perK = (r: CaseResult, f: (m: Mem) => number | undefined): number | undefined => {
    if (!r.mem) return undefined;
    const a = f(r.mem.after), b = f(r.mem.before);
    return a === undefined || b === undefined ? undefined : ((a - b) / r.mem.held) * 1000 / 1024; // KiB per 1,000 -> MiB
  };
  const mib = (v: number | undefined): number | undefined => (v === undefined ? undefined : v / 1024);
  const rows: [string, string, string, string][] = [
    ['TCP guest->host, Gbit/s', fmt(q.up, 3), fmt(s.up, 3), ratio(q.up, s.up)],
    ['TCP host->guest, Gbit/s', fmt(q.down, 3), fmt(s.down, 3), ratio(q.down, s.down)],
    ['TCP guest->host, MTU 9000, Gbit/s', fmt(j.up, 3), fmt(s.up, 3), ratio(j.up, s.up)],
    ['TCP host->guest, MTU 9000, Gbit/s', fmt(j.down, 3), fmt(s.down, 3), ratio(j.down, s.down)],
    ['IPv6 TCP guest->host, Gbit/s', fmt(q.up6, 3), fmt(s.up6, 3), ratio(q.up6, s.up6)],
    ['IPv6 TCP host->guest, Gbit/s', fmt(q.down6, 3), fmt(s.down6, 3), ratio(q.down6, s.down6)],
    ['CPU s per GB, guest->host', fmt(cpuPerGB(q.upRuns), 2), fmt(cpuPerGB(s.upRuns), 2), ratio(cpuPerGB(q.upRuns), cpuPerGB(s.upRuns))],
    ['CPU s per GB, host->guest', fmt(cpuPerGB(q.downRuns), 2), fmt(cpuPerGB(s.downRuns), 2), ratio(cpuPerGB(q.downRuns), cpuPerGB(s.downRuns))],
    ['TCP connections/s', fmt(q.conns?.perSecond, 0), fmt(s.conns?.perSecond, 0), ratio(q.conns?.perSecond, s.conns?.perSecond)],
    ['TCP RR/s (1 byte ping-pong)', fmt(q.rr?.perSecond, 0), fmt(s.rr?.perSecond, 0), ratio(q.rr?.perSecond, s.rr?.perSecond)],
    [`RSS per ${IDLE_CONNS} idle conns, MiB`, fmt(mib(perK(q, (m) => m.rss)), 2), fmt(mib(perK(s, (m) => m.rss)), 2), ratio(perK(q, (m) => m.rss), perK(s, (m) => m.rss))],
    [`heap per ${IDLE_CONNS} idle conns, MiB`, fmt(mib(perK(q, (m) => m.heapUsed)), 2), '-', '-'],
  ];
  const w = [32, 10, 10, 8];
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const out: string[] = [];
  out.push(`qnet user vs QEMU -netdev user (slirp): tap guest in a netns, QEMU hub relay, MTU 1500 unless said, ${os.cpus().length} CPUs; bulk figures are medians of ${REPEAT}`);
  out.push(line(['measure', 'qnet', 'slirp', 'ratio']));
  out.push(line(w.map((n) => '-'.repeat(n))));
  for (const r of rows) out.push(line(r));
  // Each bulk run: Gbit/s, and the CPU each process used per second of transfer (1.00 = one core).
  const runs = (b: Bulk[] | undefined): string => (b ?? []).map((x) =>
    `${x.gbps.toFixed(2)} (${Object.entries(x.cpu).map(([k, v]) => `${k} ${(v / x.seconds).toFixed(2)}`).join(', ')}; machine ${(100 * x.idle).toFixed(0)}% idle)`).join('; ');
  for (const [k, r] of Object.entries(results)) {
    if (r?.upRuns) out.push(`${k} guest->host runs (spread ${spread(r.upRuns)}), Gbit/s (CPU cores used): ${runs(r.upRuns)}`);
    if (r?.downRuns) out.push(`${k} host->guest runs (spread ${spread(r.downRuns)}), Gbit/s (CPU cores used): ${runs(r.downRuns)}`);
    if (r?.up6Runs) out.push(`${k} IPv6 guest->host runs (spread ${spread(r.up6Runs)}): ${runs(r.up6Runs)}`);
    if (r?.down6Runs) out.push(`${k} IPv6 host->guest runs (spread ${spread(r.down6Runs)}): ${runs(r.down6Runs)}`);
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
  const atLeast = (v: number | undefined, b: number | undefined, x: number): string => (v === undefined || b === undefined ? 'not measured' : v >= x * b ? 'met' : 'NOT met');
  out.push(`targets: host->guest >= 1.5x slirp ${atLeast(q.down, s.down, 1.5)}; guest->host >= 2x ${atLeast(q.up, s.up, 2)}; ` +
    `MTU 9000 >= 3x slirp's 1500 ${atLeast(j.up, s.up, 3)} / ${atLeast(j.down, s.down, 3)}; request/response >= 1.0x ${atLeast(q.rr?.perSecond, s.rr?.perSecond, 1)}`);
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
