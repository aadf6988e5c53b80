// Shared pieces of the daemon end-to-end tests (e2e-daemon*.test.ts): `qnet up` as a child
// process, `qnet CMD` runs against it, and guests started with `qnet run NET --name VM -- QEMU`
// whose console is read from qnet run's stdout (QEMU inherits it; -serial stdio).
//
// Every process here is killed by pid (and at process exit through onExit); temp dirs are
// removed by makeTempDir's exit hook.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { onExit } from './cleanup.ts';
import { guestQemuCommand, parseResults, type BootOptions } from './guest.ts';
import { repoRoot } from './user-net.ts';
import { waitFor } from './wait.ts';

export const QNET = join(repoRoot, 'bin', 'qnet.js');

function tail(s: string, n = 3000): string {
  return s.length > n ? '…' + s.slice(s.length - n) : s;
}

/** A child process with its output collected; killed at process exit. */
export class Proc {
  stdout = '';
  stderr = '';
  /** complete stdout lines with the host time (ms since the epoch) they arrived at */
  readonly lines: { t: number; line: string }[] = [];
  private partial = '';
  exitCode: number | null | undefined = undefined;
  signal: NodeJS.Signals | null = null;
  readonly exited: Promise<number | null>;
  private readonly unregister: () => void;
  constructor(readonly child: ChildProcess) {
    const pid = child.pid!;
    this.unregister = onExit(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      d = d.replace(/\r/g, '');
      this.stdout += d;
      const t = Date.now();
      const parts = (this.partial + d).split('\n');
      this.partial = parts.pop()!;
      for (const line of parts) this.lines.push({ t, line });
    });
    child.stderr!.on('data', (d: string) => { this.stderr += d; });
    child.stdin?.on('error', () => {});
    this.exited = new Promise((r) => child.on('close', (code, sig) => {
      this.exitCode = code;
      this.signal = sig;
      this.unregister();
      r(code);
    }));
  }
  get pid(): number { return this.child.pid!; }
  get running(): boolean { return this.exitCode === undefined; }
  /** Send `sig` (default SIGTERM); SIGKILL after `ms`; resolves with the exit code. */
  async stop(sig: NodeJS.Signals = 'SIGTERM', ms = 8000): Promise<number | null> {
    if (!this.running) return this.exitCode ?? null;
    try { process.kill(this.pid, sig); } catch { /* gone */ }
    const t = setTimeout(() => { try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ } }, ms);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }
}

export interface DaemonOptions {
  /** -c FILE */
  config?: string;
  runtimeDir?: string;
  stateDir?: string;
  env?: NodeJS.ProcessEnv;
  /** run `qnet up` through this: a namespace (['ip', 'netns', 'exec', NS]), another user (runAsArgv); it must exec, so the pid stays node's */
  prefix?: string[];
}

/** `node bin/qnet.js up ...` */
export class Daemon extends Proc {
  /** ms since the epoch when the API answered first */
  readyAt = 0;
  constructor(child: ChildProcess, readonly api: string) { super(child); }

  static async start(o: DaemonOptions & { api: string }): Promise<Daemon> {
    const args = [QNET, 'up'];
    if (o.config) args.push('-c', o.config);
    if (o.runtimeDir) args.push('--runtime-dir', o.runtimeDir);
    if (o.stateDir) args.push('--state-dir', o.stateDir);
    // the caller's environment, without a QNET_CONFIG that would pick another config
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.QNET_CONFIG;
    Object.assign(env, o.env);
    const argv = [...(o.prefix ?? []), process.execPath, ...args];
    const d = new Daemon(spawn(argv[0], argv.slice(1), { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] }), o.api);
    try {
      await waitFor(() => d.stdout.includes('control API on'), {
        what: 'qnet up to start', timeoutMs: 30_000, diag: () => tail(d.stderr) + tail(d.stdout),
        abort: () => !d.running && `qnet up exited (${d.exitCode})`,
      });
    } catch (e) {
      await d.stop('SIGKILL');
      throw e;
    }
    d.readyAt = Date.now();
    return d;
  }

  /** Wait until the daemon logged a line matching `re` (stderr) after offset `from`. */
  async waitLog(re: RegExp, ms: number, from = 0): Promise<void> {
    await waitFor(() => re.test(this.stderr.slice(from)), {
      what: `qnet up to log ${re}`, timeoutMs: ms, diag: () => tail(this.stderr),
      abort: () => !this.running && 'qnet up exited',
    });
  }
}

export interface CmdResult { code: number | null; stdout: string; stderr: string }

/** `qnet ARGS --api API` (or without --api when api is undefined), collected. */
export function qnet(api: string | undefined, args: string[], opts: { env?: NodeJS.ProcessEnv; prefix?: string[]; timeoutMs?: number } = {}): Promise<CmdResult> {
  const argv = [...(opts.prefix ?? []), process.execPath, QNET, ...args, ...(api ? ['--api', api] : [])];
  const p = new Proc(spawn(argv[0], argv.slice(1), { cwd: repoRoot, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] }));
  const t = setTimeout(() => { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }, opts.timeoutMs ?? 30_000);
  return p.exited.then((code) => {
    clearTimeout(t);
    return { code, stdout: p.stdout, stderr: p.stderr };
  });
}

/** `qnet ARGS --json` parsed; throws with stderr on a non-zero exit. */
export async function qnetJson<T = any>(api: string | undefined, args: string[], env?: NodeJS.ProcessEnv): Promise<T> {
  const r = await qnet(api, [...args, '--json'], { env });
  if (r.code !== 0) throw new Error(`qnet ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

let pdeathsig: Promise<boolean> | undefined;
function hasPdeathsig(): Promise<boolean> {
  pdeathsig ??= new Promise((resolve) => {
    const c = spawn('setpriv', ['--help'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    c.stdout!.on('data', (d: Buffer) => { out += d; });
    c.on('error', () => resolve(false));
    c.on('close', () => resolve(out.includes('--pdeathsig')));
  });
  return pdeathsig;
}

/** A guest started by `qnet run NET --name NAME -- qemu-system-x86_64 ...`. */
export class RunGuest extends Proc {
  private readonly cleanupCmd: () => void;
  constructor(child: ChildProcess, readonly name: string, cleanup: () => void) {
    super(child);
    this.cleanupCmd = cleanup;
    void this.exited.then(() => this.cleanupCmd());
  }

  /**
   * opts.prefix runs qnet run through it (a namespace, another user: ['ip', 'netns', 'exec', NS,
   * 'setpriv', ...]; give guest.runAs that user, so QEMU can read its files); opts.qemu rewrites
   * QEMU's argv first; opts.runArgs are more `qnet run` options (--mac).
   */
  static async start(api: string | undefined, network: string, name: string, guest: Omit<BootOptions, 'netArgs' | 'netnsName' | 'timeoutMs'>,
    opts: { env?: NodeJS.ProcessEnv; model?: string; prefix?: string[]; qemu?: (argv: string[]) => string[]; runArgs?: string[] } = {}): Promise<RunGuest> {
    const cmd = await guestQemuCommand({ name, ...guest });
    const qargv = opts.qemu ? opts.qemu(cmd.argv) : cmd.argv;
    // setpriv --pdeathsig: QEMU (qnet run's child) dies with qnet run even if that is SIGKILLed
    const qemu = (await hasPdeathsig()) ? ['setpriv', '--pdeathsig', 'KILL', ...qargv] : qargv;
    const args = [QNET, 'run', network, '--name', name, ...(opts.model ? ['--model', opts.model] : []), ...(opts.runArgs ?? []), ...(api ? ['--api', api] : []), '--', ...qemu];
    const argv = [...(opts.prefix ?? []), process.execPath, ...args];
    const child = spawn(argv[0], argv.slice(1), { cwd: repoRoot, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    return new RunGuest(child, name, cmd.cleanup);
  }

  get output(): string { return this.stdout; }
  results(): Map<string, string[]> { return parseResults(this.stdout); }
  /** One value of `QNET key value` (the last such line). */
  value(key: string): string | undefined { return this.results().get(key)?.join(' '); }

  /** With QNET_E2E_VERBOSE set, print the console (for reading what a passing test saw). */
  dump(): void {
    if (process.env.QNET_E2E_VERBOSE) console.log(this.diag().replace(/^/gm, '  '));
  }

  diag(): string {
    return `--- ${this.name}: console ---\n${tail(this.stdout)}\n--- ${this.name}: qnet run stderr ---\n${tail(this.stderr, 1500)}`;
  }

  /** Wait for `re` in complete console lines (from offset `from`). */
  async waitFor(re: RegExp, ms: number, from = 0): Promise<RegExpMatchArray> {
    // only complete lines while QEMU runs (so a half-written line never matches)
    const match = () => (this.running ? this.stdout.slice(0, this.stdout.lastIndexOf('\n') + 1) : this.stdout).slice(from).match(re);
    return waitFor(match, {
      what: `${this.name}: ${re}`, timeoutMs: ms, diag: () => this.diag(),
      abort: () => !this.running && !match() && `${this.name}: qnet run exited (${this.exitCode})`,
    });
  }

  /** Write to the guest's serial console (stdin of its /test.sh). */
  write(s: string): void { if (this.running) this.child.stdin!.write(s); }
}

/**
 * The TCP sockets in LISTEN state that belong to process `pid` (by socket inodes in
 * /proc/PID/fd against /proc/net/tcp{,6} LISTEN entries): local "addr:port" strings.
 */
export async function tcpListeners(pid: number): Promise<string[]> {
  const { readdir, readlink, readFile } = await import('node:fs/promises');
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  const out: string[] = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = await readFile(f, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10 || c[3] !== '0A' || !inodes.has(c[9])) continue;
      const [a, p] = c[1].split(':');
      // /proc/net/tcp: IPv4 as little-endian hex; IPv6 left as hex
      const addr = a.length === 8 ? [3, 2, 1, 0].map((i) => parseInt(a.slice(i * 2, i * 2 + 2), 16)).join('.') : a;
      out.push(`${addr}:${parseInt(p, 16)}`);
    }
  }
  return out;
}
