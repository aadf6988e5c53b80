// Network namespaces for end-to-end tests (needs root).  Never touches the root namespace:
// every link is created with `ip -n <ns>` inside a namespace this module created.
//
//   const a = await createNetns(), b = await createNetns();
//   await veth(a, b, { addrA: '10.9.0.1/24', addrB: '10.9.0.2/24' });
//   await b.run(['ping', '-c1', '-W2', '10.9.0.1']);
//   const t = await tap(a, { addr: '192.168.78.1/24' });   // then bootGuest({ netnsName: a.name, ... })
//   await cleanupNetns();                                  // also runs at process exit
//
// Names: namespaces `qnt-<pid>-<n>`, interfaces `qv<n>a`/`qv<n>b` (veth), `qtap<n>`, `qbr<n>`.

import { spawn, execFile, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { onExit } from './cleanup.ts';
import { waitFor } from './wait.ts';

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Written to the command's stdin. */
  input?: string | Buffer;
  /** Kill the command (SIGKILL) after this long (default 60 s). */
  timeoutMs?: number;
}

/** For `{ skip: needsRoot }`: network namespaces (and taps in them) need root. */
export const needsRoot: string | false = process.getuid?.() === 0 ? false : 'needs root (network namespaces)';

let nsCounter = 0;
let ifCounter = 0;
const registry = new Map<string, Netns>();

function execRaw(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolveP) => {
    const child = execFile(
      argv[0],
      argv.slice(1),
      { timeout: opts.timeoutMs ?? 60_000, killSignal: 'SIGKILL', maxBuffer: 64 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        let code: number | null = 0;
        if (err) {
          const c = (err as NodeJS.ErrnoException & { code?: unknown }).code;
          code = typeof c === 'number' ? c : null;
          if (typeof c === 'string') stderr = `${stderr}${stderr ? '\n' : ''}${err.message}`;
          if ((err as { killed?: boolean }).killed) stderr += `\n(killed after ${opts.timeoutMs ?? 60_000} ms)`;
        }
        resolveP({ code, stdout, stderr });
      },
    );
    child.stdin?.on('error', () => {});
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

async function must(argv: string[], opts?: ExecOptions): Promise<string> {
  const r = await execRaw(argv, opts);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code}): ${argv.join(' ')}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

export class Netns {
  readonly name: string;
  private readonly procs = new Set<ChildProcess>();
  private deleted = false;

  constructor(name: string) {
    this.name = name;
  }

  /** Run argv inside the namespace; never throws for a non-zero exit. */
  exec(argv: string[], opts?: ExecOptions): Promise<ExecResult> {
    return execRaw(['ip', 'netns', 'exec', this.name, ...argv], opts);
  }

  /** Run argv inside the namespace; throws on non-zero exit; returns stdout. */
  run(argv: string[], opts?: ExecOptions): Promise<string> {
    return must(['ip', 'netns', 'exec', this.name, ...argv], opts);
  }

  /** Run a shell script inside the namespace (sh -c); throws on non-zero exit. */
  sh(script: string, opts?: ExecOptions): Promise<string> {
    return this.run(['sh', '-c', script], opts);
  }

  /** `ip -n <ns> ...args`; throws on failure. */
  ip(...args: string[]): Promise<string> {
    return must(['ip', '-n', this.name, ...args]);
  }

  /**
   * Start a long-running process inside the namespace.  It gets SIGKILL when this test process
   * dies (setpriv --pdeathsig) and is killed by delete()/cleanupNetns().  Processes that
   * daemonize are still caught: delete() kills everything listed by `ip netns pids`.
   */
  spawn(argv: string[], opts: SpawnOptions = {}): ChildProcess {
    if (this.deleted) throw new Error(`netns ${this.name} already deleted`);
    const child = spawn('ip', ['netns', 'exec', this.name, 'setpriv', '--pdeathsig', 'KILL', ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...opts,
    });
    this.procs.add(child);
    child.on('exit', () => this.procs.delete(child));
    child.on('error', () => this.procs.delete(child));
    return child;
  }

  async linkUp(dev: string): Promise<void> {
    await this.ip('link', 'set', 'dev', dev, 'up');
  }

  /** Add an address, e.g. addAddr('qv1a', '10.0.0.1/24'). */
  async addAddr(dev: string, cidr: string): Promise<void> {
    await this.ip('addr', 'add', cidr, 'dev', dev);
  }

  /** Add a route: addRoute('default', { via: '10.0.0.1' }) or addRoute('10.1.0.0/16', { dev: 'qv1a' }). */
  async addRoute(dest: string, r: { via?: string; dev?: string }): Promise<void> {
    const args = ['route', 'add', dest];
    if (r.via) args.push('via', r.via);
    if (r.dev) args.push('dev', r.dev);
    await this.ip(...args);
  }

  /** sysctl inside the namespace, e.g. sysctl('net.ipv4.ip_forward', '1'). */
  async sysctl(key: string, value: string): Promise<void> {
    await this.run(['sysctl', '-q', '-w', `${key}=${value}`]);
  }

  /** Kill everything running in the namespace and delete it. Idempotent. */
  async delete(): Promise<void> {
    if (this.deleted) return;
    this.deleted = true;
    registry.delete(this.name);
    this.killAllSync();
    // the namespace goes once nothing runs in it any more (best effort: delete it anyway)
    await waitFor(async () => (await execRaw(['ip', 'netns', 'pids', this.name])).stdout.trim() === '', { what: `the processes in ${this.name} to end`, timeoutMs: 5000 }).catch(() => {});
    await execRaw(['ip', 'netns', 'del', this.name]);
  }

  /** @internal synchronous teardown for process exit */
  deleteSync(): void {
    if (this.deleted) return;
    this.deleted = true;
    registry.delete(this.name);
    this.killAllSync();
    try {
      execFileSync('ip', ['netns', 'del', this.name], { stdio: 'ignore' });
    } catch {
      /* ignore */
    }
  }

  private killAllSync(): void {
    for (const p of this.procs) {
      if (p.pid !== undefined) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    this.procs.clear();
    // anything else still inside this namespace (QEMU started with netnsName, daemons, ...)
    try {
      const out = execFileSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      for (const line of out.split('\n')) {
        const pid = Number(line.trim());
        if (pid > 1 && pid !== process.pid) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
    } catch {
      /* namespace gone */
    }
  }
}

let exitHookInstalled = false;

/** Create a uniquely named namespace (`qnt-<pid>-<n>`) with lo up. */
export async function createNetns(): Promise<Netns> {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    cleanupStaleNetns();
    onExit(() => {
      for (const ns of [...registry.values()]) ns.deleteSync();
    });
  }
  const name = `qnt-${process.pid}-${++nsCounter}`;
  await must(['ip', 'netns', 'add', name]);
  const ns = new Netns(name);
  registry.set(name, ns);
  try {
    await ns.linkUp('lo');
  } catch (e) {
    await ns.delete();
    throw e;
  }
  return ns;
}

export interface VethOptions {
  nameA?: string;
  nameB?: string;
  /** CIDR for the end in a, e.g. '10.0.0.1/24'. */
  addrA?: string;
  addrB?: string;
  mtu?: number;
  /** Bring both ends up (default true). */
  up?: boolean;
}

/** A veth pair with one end in `a` and the other in `b` (a and b must be test namespaces, may be equal). */
export async function veth(a: Netns, b: Netns, opts: VethOptions = {}): Promise<{ a: string; b: string }> {
  const n = ++ifCounter;
  const nameA = opts.nameA ?? `qv${n}a`;
  const nameB = opts.nameB ?? `qv${n}b`;
  const args = ['link', 'add', nameA];
  if (opts.mtu) args.push('mtu', String(opts.mtu));
  args.push('type', 'veth', 'peer', 'name', nameB, 'netns', b.name);
  if (opts.mtu) args.push('mtu', String(opts.mtu));
  await a.ip(...args);
  if (opts.addrA) await a.addAddr(nameA, opts.addrA);
  if (opts.addrB) await b.addAddr(nameB, opts.addrB);
  if (opts.up !== false) {
    await a.linkUp(nameA);
    await b.linkUp(nameB);
  }
  return { a: nameA, b: nameB };
}

export interface TapOptions {
  name?: string;
  /** CIDR for the namespace side of the tap. */
  addr?: string;
  mtu?: number;
  /** Bring it up (default true). */
  up?: boolean;
}

/**
 * A persistent tap device inside `ns` (`ip tuntap add mode tap`).  Attach a guest with
 * bootGuest({ netnsName: ns.name, netArgs: ['-netdev', `tap,id=n0,ifname=${name},script=no,downscript=no`, ...] }).
 */
export async function tap(ns: Netns, opts: TapOptions = {}): Promise<string> {
  const name = opts.name ?? `qtap${++ifCounter}`;
  await ns.ip('tuntap', 'add', 'dev', name, 'mode', 'tap');
  if (opts.mtu) await ns.ip('link', 'set', 'dev', name, 'mtu', String(opts.mtu));
  if (opts.addr) await ns.addAddr(name, opts.addr);
  if (opts.up !== false) await ns.linkUp(name);
  return name;
}

/** A Linux bridge inside `ns` with the given ports enslaved (and optional address). */
export async function bridge(ns: Netns, opts: { name?: string; ports?: string[]; addr?: string } = {}): Promise<string> {
  const name = opts.name ?? `qbr${++ifCounter}`;
  await ns.ip('link', 'add', name, 'type', 'bridge');
  for (const p of opts.ports ?? []) await ns.ip('link', 'set', 'dev', p, 'master', name);
  if (opts.addr) await ns.addAddr(name, opts.addr);
  await ns.linkUp(name);
  return name;
}

/** Delete every namespace this process created (and kill what runs inside). */
export async function cleanupNetns(): Promise<void> {
  for (const ns of [...registry.values()]) await ns.delete();
}

/** Delete leftover `qnt-<pid>-*` namespaces whose creating process is gone (crashed earlier runs). */
export function cleanupStaleNetns(): string[] {
  const removed: string[] = [];
  let out = '';
  try {
    out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  } catch {
    return removed;
  }
  for (const line of out.split('\n')) {
    const m = /^(qnt-(\d+)-\d+)\b/.exec(line.trim());
    if (!m) continue;
    const pid = Number(m[2]);
    if (pid === process.pid) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (alive) continue;
    const ns = new Netns(m[1]);
    ns.deleteSync();
    removed.push(m[1]);
  }
  return removed;
}
