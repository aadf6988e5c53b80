// How the host layer talks to the kernel: by running the tools users already trust for it
// (`ip -json`, `bridge -json`, `nft -j` / `nft -f`, `sysctl`), all from Debian's iproute2,
// nftables and procps, through one small interface, the Runner.
//
//   localRunner()        the namespace this process runs in (the daemon's)
//   netnsRunner(NAME)    `ip netns exec NAME ...`: what tests point the host modules at, so
//                        they never touch the namespace the test itself runs in
//
// A command that fails becomes a HostError naming the command, the kernel's message and,
// for a permission error, what to do (kernel networks need root / CAP_NET_ADMIN).
// Every call is a short-lived child process (a few ms); nothing here is on a packet path.
import { execFile } from 'node:child_process';

export interface RunResult { code: number; stdout: string; stderr: string }

export interface Runner {
  /** 'this host' or 'network namespace NAME': for messages */
  readonly where: string;
  /** the namespace name when this runner is pointed at one */
  readonly netns?: string;
  /** Run argv; never throws for a non-zero exit (see must()). */
  exec(argv: string[], input?: string): Promise<RunResult>;
}

export class HostError extends Error {
  constructor(message: string, readonly argv: string[], readonly stderr: string, readonly code: number) { super(message); }
}

const TIMEOUT_MS = 30_000;

function spawnCollect(argv: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(argv[0], argv.slice(1), { timeout: TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 32 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      let code = 0;
      if (err) {
        const c = (err as NodeJS.ErrnoException & { code?: unknown }).code;
        code = typeof c === 'number' ? c : 127;
        if (typeof c === 'string') stderr = `${stderr}${stderr ? '\n' : ''}${c === 'ENOENT' ? `${argv[0]}: command not found` : err.message}`;
      }
      resolve({ code, stdout, stderr });
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

export function localRunner(): Runner {
  return { where: 'this host', exec: (argv, input) => spawnCollect(argv, input) };
}

/** A runner for the network namespace NAME (for tests, and for `qnet doctor --netns`). */
export function netnsRunner(name: string): Runner {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new Error(`'${name}' is not a network namespace name`);
  return { where: `network namespace ${name}`, netns: name, exec: (argv, input) => spawnCollect(['ip', 'netns', 'exec', name, ...argv], input) };
}

const PACKAGE: Record<string, string> = { ip: 'iproute2', bridge: 'iproute2', nft: 'nftables', sysctl: 'procps' };

/** Run argv; throw a HostError explaining the failure unless it exits 0. Returns stdout. */
export async function must(r: Runner, argv: string[], input?: string): Promise<string> {
  const res = await r.exec(argv, input);
  if (res.code === 0) return res.stdout;
  throw hostError(r, argv, res);
}

export function hostError(r: Runner, argv: string[], res: RunResult): HostError {
  const msg = (res.stderr || res.stdout).trim().split('\n').filter(Boolean).slice(0, 6).join('; ') || `exit status ${res.code}`;
  let hint = '';
  if (res.code === 127) hint = ` (install Debian's ${PACKAGE[argv[0]] ?? argv[0]} package)`;
  else if (/Operation not permitted|Permission denied/i.test(msg)) hint = ' (kernel networks need root, or CAP_NET_ADMIN)';
  const shown = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
  return new HostError(`${shown} failed on ${r.where}: ${msg}${hint}`, argv, res.stderr, res.code);
}

/** Run argv and parse its JSON output (`ip -json`, `nft -j`). Empty output is []. */
export async function mustJson<T>(r: Runner, argv: string[]): Promise<T> {
  const out = (await must(r, argv)).trim();
  if (out === '') return [] as unknown as T;
  try {
    return JSON.parse(out) as T;
  } catch (e) {
    throw new HostError(`${argv.join(' ')} printed output that is not JSON (${(e as Error).message}); is ${argv[0]} too old?`, argv, '', 0);
  }
}
