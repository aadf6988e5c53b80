// `qnet switch` as a real child process for tests: waits for its listeners, reads its
// counters through SIGUSR1 (one JSON line on stdout), stops it with SIGTERM.
import { spawn, type ChildProcess } from 'node:child_process';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { waitFor } from './wait.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const deadline = (ms: number) => new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref());

export interface PortStats {
  id: number; name: string; kind: string; peer: string; isolated: boolean; macs: string[];
  rxFrames: number; rxBytes: number; txFrames: number; txBytes: number; rxDropped: number; txDropped: number;
  drops: { vlan: number; spoof: number; mtu: number; isolation: number; filtered: number; malformed: number };
}
export interface SwitchStats { switch: { flooded: number; forwarded: number; macMoves: number; fdbFull: number }; ports: PortStats[] }

/** `qnet switch` as a real child process; counters through SIGUSR1, stop with SIGTERM. */
export class QnetSwitch {
  stdout = '';
  stderr = '';
  exitCode: number | null | undefined = undefined;
  exitSignal: NodeJS.Signals | null = null;
  readonly exited: Promise<number | null>;
  private constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => (this.stdout += d));
    child.stderr!.on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((r) => child.on('exit', (code, sig) => { this.exitCode = code; this.exitSignal = sig; r(code); }));
  }
  get pid(): number { return this.child.pid!; }
  get alive(): boolean { return this.exitCode === undefined; }
  /** `prefix` runs it through e.g. runAsArgv(nobody). */
  static async start(args: string[], listeners: number, prefix: string[] = [], env?: NodeJS.ProcessEnv): Promise<QnetSwitch> {
    const argv = [...prefix, process.execPath, join(repoRoot, 'bin', 'qnet.js'), 'switch', ...args];
    const child = spawn(argv[0], argv.slice(1), { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const q = new QnetSwitch(child);
    try {
      await waitFor(() => (q.stdout.match(/listening on /g) ?? []).length >= listeners, {
        what: `qnet switch to listen on ${listeners} attach points`, timeoutMs: 30_000, diag: () => q.stderr + q.stdout,
        abort: () => !q.alive && `qnet switch exited (${q.exitCode})`,
      });
    } catch (e) {
      q.kill();
      throw e;
    }
    return q;
  }
  private jsonLines(): string[] { return this.stdout.split('\n').filter((l) => l.startsWith('{')); }
  async stats(ms = 10_000): Promise<SwitchStats> {
    const n = this.jsonLines().length;
    process.kill(this.pid, 'SIGUSR1');
    const line = await waitFor(() => { const l = this.jsonLines(); return l.length > n && this.stdout.endsWith('\n') && l[n]; }, {
      what: 'the SIGUSR1 counters', timeoutMs: ms, diag: () => this.stderr,
      abort: () => !this.alive && `qnet switch exited (${this.exitCode ?? this.exitSignal})`,
    });
    return JSON.parse(line) as SwitchStats;
  }
  async stop(ms = 5000): Promise<number | null | 'timeout'> {
    if (!this.alive) return this.exitCode ?? null;
    process.kill(this.pid, 'SIGTERM');
    return Promise.race([this.exited, deadline(ms)]);
  }
  /** SIGTERM, and the counters it prints on the way out. */
  async stopWithStats(ms = 5000): Promise<{ code: number | null; final: SwitchStats }> {
    const n = this.jsonLines().length;
    process.kill(this.pid, 'SIGTERM');
    const code = await Promise.race([this.exited, deadline(ms)]);
    if (code === 'timeout') { this.kill(); throw new Error(`qnet switch ignored SIGTERM for ${ms} ms`); }
    const lines = this.jsonLines();
    if (lines.length <= n) throw new Error(`no counters printed on SIGTERM:\n${this.stdout}`);
    return { code, final: JSON.parse(lines[n]) as SwitchStats };
  }
  kill(): void {
    if (!this.alive) return;
    try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}

