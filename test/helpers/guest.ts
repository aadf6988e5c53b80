// Boot tiny QEMU guests (Debian cloud kernel + busybox initramfs) for end-to-end tests.
//
//   const g = await bootGuest({ netArgs: [...], script: 'udhcpc -i eth0 -n -q\necho QNET done 1' });
//   await g.waitFor(/QNET done/, 60_000);
//   const r = parseResults(g.output);
//
// The guest's /init prints `QNET-INIT ready ...`, runs the script as /test.sh, prints
// `QNET-INIT test-exit <rc>` and powers off (so `exited` resolves with 0).
// Guest scripts report results as lines `QNET <key> <value...>` (see parseResults).
// The udhcpc default script prints the lease as `QNET dhcp-<field> <value>` lines
// (dhcp-event, dhcp-ip, dhcp-mask, dhcp-router, dhcp-dns, dhcp-domain, dhcp-hostname,
// dhcp-mtu, dhcp-lease, dhcp-serverid, dhcp-tftp, dhcp-bootfile, dhcp-boot_file, ..., dhcp-done).
//
// Safety: QEMU is always started with -nodefaults (no default NIC); `user`, `tap` and
// `bridge` netdevs are refused unless the guest runs inside a test namespace (netnsName).

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, renameSync, mkdirSync, openSync, closeSync, constants as fsConstants } from 'node:fs';
import { appendFile, copyFile, mkdir, open, writeFile, chmod, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { onExit, makeTempDir } from './cleanup.ts';

export interface GuestImage {
  kernel: string;
  initrd: string;
}

export type Accel = 'kvm' | 'tcg';

export interface BootOptions {
  /** Label used in QEMU's -name and in error messages. */
  name?: string;
  /** NIC arguments, e.g. ['-netdev','stream,id=n0,server=off,addr.type=unix,addr.path=SOCK','-device','virtio-net-pci,netdev=n0,mac=52:54:00:..']. */
  netArgs: string[];
  /** The guest's /test.sh (run with busybox sh; stdout/stderr go to the console). */
  script: string;
  /** Guest lifetime; the guest is killed after this (default 120 s). */
  timeoutMs?: number;
  /** Extra QEMU arguments. */
  extraArgs?: string[];
  /** Run QEMU inside `ip netns exec NAME`. */
  netnsName?: string;
  /** Extra files to put in the guest's root file system (path relative to /, content). Mode 0755. */
  files?: Record<string, string | Buffer>;
  /** Guest RAM in MiB (default 128). */
  memoryMb?: number;
  /** Extra kernel command line text. */
  append?: string;
  /** Override the accelerator (default: detectAccel()). */
  accel?: Accel;
  /** Another QEMU binary (default qemu-system-x86_64 on PATH). */
  qemu?: string;
  /** Another kernel + initramfs (default: the busybox test guest, ensureGuestImage()). */
  image?: GuestImage;
  /**
   * Run QEMU as this (unprivileged) user: the per-test files, and a copy of the kernel, go in a
   * directory that user can read (the image cache may sit in root's home).
   */
  runAs?: RunAs;
}

/** A user to run a process as, through setpriv: no supplementary groups but `groups`. */
export interface RunAs { uid: number; gid: number; groups?: number[] }

/** The argv prefix that runs a command as `u` (setpriv; the caller must be root). */
export function runAsArgv(u: RunAs): string[] {
  return ['setpriv', `--reuid=${u.uid}`, `--regid=${u.gid}`, ...(u.groups?.length ? [`--groups=${u.groups.join(',')}`] : ['--clear-groups'])];
}

export interface Guest {
  readonly name: string;
  readonly pid: number;
  readonly accel: Accel;
  /** Console output so far (\r removed). */
  readonly output: string;
  /** QEMU's own stderr so far. */
  readonly stderr: string;
  /** ms from spawn until the `QNET-INIT ready` marker (undefined until seen). */
  readonly bootMs: number | undefined;
  /** Resolves with QEMU's exit code (null if killed by a signal). Never rejects. */
  readonly exited: Promise<number | null>;
  /**
   * Wait until `re` matches the console output (searched from offset `from`, default 0;
   * only complete lines are searched while the guest runs).
   * Rejects on timeout or guest exit with the last 2 KB of console output in the message.
   */
  waitFor(re: RegExp, timeoutMs: number, opts?: { from?: number }): Promise<RegExpMatchArray>;
  /** Wait for QEMU to exit (guest poweroff), rejecting on timeout. */
  waitForExit(timeoutMs: number): Promise<number | null>;
  /** parseResults(this.output) */
  results(): Map<string, string[]>;
  /** Write to the guest's serial console (stdin of the test script). */
  write(data: string): void;
  /** SIGKILL QEMU and wait until it is gone. Idempotent. */
  kill(): Promise<void>;
}

export const READY_MARKER = /QNET-INIT ready/;
export const TEST_EXIT_MARKER = /QNET-INIT test-exit (\d+)/;

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..');
const buildScript = join(repoRoot, 'testbed', 'build-guest.sh');

export function cacheDir(): string {
  return process.env.QNET_CACHE ?? join(homedir(), '.cache', 'qnet');
}

function execFileP(cmd: string, args: string[], timeoutMs = 300_000): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolveP, rejectP) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) rejectP(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolveP({ stdout, stderr });
    });
  });
}

let imagePromise: Promise<GuestImage> | undefined;

/** Build (or reuse the cached) guest image; runs testbed/build-guest.sh once per process. */
export function ensureGuestImage(): Promise<GuestImage> {
  imagePromise ??= (async () => {
    const { stdout } = await execFileP(buildScript, []);
    let kernel = '';
    let initrd = '';
    for (const line of stdout.split('\n')) {
      const [k, ...rest] = line.split(' ');
      if (k === 'kernel') kernel = rest.join(' ');
      if (k === 'initrd') initrd = rest.join(' ');
    }
    if (!kernel || !initrd) throw new Error(`build-guest.sh printed no kernel/initrd:\n${stdout}`);
    return { kernel, initrd };
  })();
  imagePromise.catch(() => {
    imagePromise = undefined;
  });
  return imagePromise;
}

// ---------------------------------------------------------------------------------------------
// Accelerator detection

let accelPromise: Promise<Accel> | undefined;

function kvmOpenable(): boolean {
  try {
    const fd = openSync('/dev/kvm', fsConstants.O_RDWR);
    closeSync(fd);
    return true;
  } catch {
    return false;
  }
}

/**
 * 'kvm' if a KVM guest really boots here, else 'tcg'.  QNET_ACCEL=kvm|tcg overrides.
 * The probe (one guest boot with -accel kvm, ≤10 s) is cached in <cache>/guest/accel.json,
 * keyed by host boot id, QEMU binary and guest image.
 */
export function detectAccel(): Promise<Accel> {
  accelPromise ??= (async (): Promise<Accel> => {
    const env = process.env.QNET_ACCEL;
    if (env === 'kvm' || env === 'tcg') return env;
    if (!kvmOpenable()) return 'tcg';
    const img = await ensureGuestImage();
    let bootId = '';
    try {
      bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      /* ignore */
    }
    const qemuVersion = (await execFileP('qemu-system-x86_64', ['--version'])).stdout.split('\n')[0] ?? '';
    const stampPath = join(dirname(img.initrd), 'stamp');
    const stamp = existsSync(stampPath) ? readFileSync(stampPath, 'utf8').trim() : '';
    const key = createHash('sha256').update(`${bootId}\n${qemuVersion}\n${stamp}`).digest('hex');
    const cacheFile = join(dirname(img.initrd), 'accel.json');
    try {
      const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as { key?: string; accel?: string };
      if (cached.key === key && (cached.accel === 'kvm' || cached.accel === 'tcg')) return cached.accel;
    } catch {
      /* no cache */
    }
    let accel: Accel = 'tcg';
    let g: Guest | undefined;
    try {
      g = await bootGuest({ name: 'kvm-probe', netArgs: [], script: 'echo QNET kvm-probe ok', accel: 'kvm', timeoutMs: 15_000 });
      await g.waitFor(/QNET kvm-probe ok/, 10_000);
      accel = 'kvm';
    } catch {
      accel = 'tcg';
    } finally {
      await g?.kill();
    }
    try {
      mkdirSync(dirname(cacheFile), { recursive: true });
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify({ key, accel, at: new Date().toISOString() }) + '\n');
      renameSync(tmp, cacheFile);
    } catch {
      /* ignore */
    }
    return accel;
  })();
  return accelPromise;
}

// ---------------------------------------------------------------------------------------------
// Results convention

/** All `QNET <key> <value...>` lines in order (values split on whitespace; may be empty). */
export function parseResultLines(output: string): Array<{ key: string; values: string[] }> {
  const out: Array<{ key: string; values: string[] }> = [];
  for (const raw of output.split('\n')) {
    const line = raw.replace(/\r/g, '');
    const m = /^QNET ([^\s]+)(?:[ \t]+(.*))?$/.exec(line);
    if (!m) continue;
    const rest = (m[2] ?? '').trim();
    out.push({ key: m[1], values: rest === '' ? [] : rest.split(/\s+/) });
  }
  return out;
}

/** `QNET <key> <value...>` lines as a map key → values; a later line with the same key wins. */
export function parseResults(output: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const { key, values } of parseResultLines(output)) map.set(key, values);
  return map;
}

/** Distinct MAC 52:54:00:xx:xx:xx for test index (0..2^24-1), mixed with the pid so parallel test files differ. */
export function guestMac(index: number): string {
  if (!Number.isInteger(index) || index < 0) throw new Error(`guestMac: bad index ${index}`);
  const hi = (process.pid & 0xff) ^ ((index >> 16) & 0xff);
  const b = [0x52, 0x54, 0x00, hi, (index >> 8) & 0xff, index & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

// ---------------------------------------------------------------------------------------------
// Booting

const live = new Map<number, { tmp: string }>();
let guestCounter = 0;

function checkNetSafety(args: string[], netnsName: string | undefined): void {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a !== '-netdev' && a !== '-nic' && a !== '-net' && a !== '--netdev' && a !== '--nic') continue;
    const spec = args[i + 1] ?? '';
    const type = spec.split(',')[0];
    if (a === '-net' && type === 'nic') continue;
    if ((type === 'user' || type === 'tap' || type === 'bridge') && !netnsName) {
      throw new Error(`bootGuest: refusing '${a} ${spec}' outside a test network namespace (set netnsName)`);
    }
    if (type === 'tap' && !/(^|,)script=no(,|$)/.test(spec)) {
      throw new Error(`bootGuest: tap netdevs need script=no,downscript=no (got '${spec}')`);
    }
    if (type === 'bridge') throw new Error(`bootGuest: '-netdev bridge' is not allowed in tests`);
  }
}

async function writeCpio(dir: string, files: Record<string, string | Buffer>, out: string): Promise<void> {
  const names: string[] = [];
  for (const [rel, content] of Object.entries(files)) {
    const clean = rel.replace(/^\/+/, '');
    if (!clean || clean.split('/').includes('..')) throw new Error(`bad guest file path ${rel}`);
    const p = join(dir, clean);
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, content);
    await chmod(p, 0o755);
    // parent directories first
    const parts = clean.split('/');
    for (let i = 1; i < parts.length; i++) names.push(parts.slice(0, i).join('/'));
    names.push(clean);
  }
  const list = [...new Set(names)].join('\n') + '\n';
  await new Promise<void>((resolveP, rejectP) => {
    const p = spawn('sh', ['-c', `cpio -o -H newc -R 0:0 --quiet > "$1"`, 'sh', out], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', rejectP);
    p.on('exit', (code) => (code === 0 ? resolveP() : rejectP(new Error(`cpio failed (${code}): ${err}`))));
    p.stdin.end(list);
  });
}

let pdeathsigSupported: boolean | undefined;
async function hasPdeathsig(): Promise<boolean> {
  if (pdeathsigSupported === undefined) {
    try {
      const { stdout } = await execFileP('setpriv', ['--help']);
      pdeathsigSupported = stdout.includes('--pdeathsig');
    } catch {
      pdeathsigSupported = false;
    }
  }
  return pdeathsigSupported;
}

function tail(s: string, n = 2048): string {
  return s.length > n ? '…' + s.slice(s.length - n) : s;
}

/**
 * The per-test initrd (base initramfs + a cpio with /test.sh and `files`) in `dir`, and QEMU's
 * arguments (without the program name) booting it.
 */
async function buildQemuArgs(
  opts: Omit<BootOptions, 'netArgs'>, dir: string, img: GuestImage, accel: Accel, name: string, netArgs: string[], extraArgs: string[],
): Promise<string[]> {
  if (opts.runAs) {
    // readable for the user QEMU runs as: the directory, the initrd built below, the kernel
    await chmod(dir, 0o755);
    const kernel = join(dir, 'vmlinuz');
    await copyFile(img.kernel, kernel);
    await chmod(kernel, 0o644);
    img = { ...img, kernel };
  }
  // Per-test cpio appended to the base initramfs (padded to 512 bytes; the kernel
  // needs uncompressed cpio members to start 4-byte aligned and skips zero padding).
  const rootDir = join(dir, 'root');
  await mkdir(rootDir);
  const cpioPath = join(dir, 'test.cpio');
  await writeCpio(rootDir, { ...(opts.files ?? {}), 'test.sh': opts.script.endsWith('\n') ? opts.script : opts.script + '\n' }, cpioPath);
  const initrd = join(dir, 'initrd.img');
  await copyFile(img.initrd, initrd);
  const size = (await stat(initrd)).size;
  const pad = (512 - (size % 512)) % 512;
  if (pad) await appendFile(initrd, Buffer.alloc(pad));
  {
    const fh = await open(initrd, 'a');
    try {
      await fh.write(readFileSync(cpioPath));
    } finally {
      await fh.close();
    }
  }
  if (opts.runAs) await chmod(initrd, 0o644);
  const cmdline = ['console=ttyS0', 'quiet', 'loglevel=1', 'panic=-1', opts.append ?? ''].filter(Boolean).join(' ');
  return [
    '-name', name,
    '-accel', accel,
    '-nodefaults', '-no-user-config',
    '-display', 'none',
    '-serial', 'stdio',
    '-no-reboot',
    '-m', String(opts.memoryMb ?? 128),
    '-smp', '1',
    '-kernel', img.kernel,
    '-initrd', initrd,
    '-append', cmdline,
    ...netArgs,
    ...extraArgs,
  ];
}

export interface GuestCommand {
  /** `qemu-system-x86_64 ARGS...`: the guest on the serial console (stdio), with no NIC unless extraArgs add one */
  argv: string[];
  /** Remove the per-test initrd (also done at process exit). */
  cleanup(): void;
}

/**
 * The QEMU command line that boots the test guest running `script`, without spawning it and
 * without network arguments: for wrappers that add their own NIC (e.g. `qnet run NET -- ARGV`).
 * The console is `-serial stdio`; the guest prints the same markers as with bootGuest.
 */
export async function guestQemuCommand(opts: Omit<BootOptions, 'netArgs' | 'netnsName' | 'timeoutMs'>): Promise<GuestCommand> {
  const extraArgs = opts.extraArgs ?? [];
  checkNetSafety(extraArgs, undefined);
  const img = await ensureGuestImage();
  const accel = opts.accel ?? (await detectAccel());
  const name = opts.name ?? `guest${++guestCounter}`;
  const tmp = makeTempDir('guestcmd-');
  try {
    const args = await buildQemuArgs(opts, tmp.path, img, accel, name, [], extraArgs);
    return { argv: ['qemu-system-x86_64', ...args], cleanup: tmp.remove };
  } catch (e) {
    tmp.remove();
    throw e;
  }
}

/** Boot a guest that runs `script` as /test.sh. Resolves once QEMU has been spawned. */
export async function bootGuest(opts: BootOptions): Promise<Guest> {
  const netArgs = opts.netArgs ?? [];
  const extraArgs = opts.extraArgs ?? [];
  checkNetSafety([...netArgs, ...extraArgs], opts.netnsName);
  const img = opts.image ?? (await ensureGuestImage());
  const accel = opts.accel ?? (await detectAccel());
  const name = opts.name ?? `guest${++guestCounter}`;

  const tmp = makeTempDir('guest-');
  let pid = -1;
  try {
    const qemuArgs = await buildQemuArgs(opts, tmp.path, img, accel, name, netArgs, extraArgs);
    let argv = [opts.qemu ?? 'qemu-system-x86_64', ...qemuArgs];
    if (await hasPdeathsig()) argv = ['setpriv', '--pdeathsig', 'KILL', ...argv];
    if (opts.runAs) argv = [...runAsArgv(opts.runAs), ...argv];
    if (opts.netnsName) argv = ['ip', 'netns', 'exec', opts.netnsName, ...argv];

    const startedAt = Date.now();
    const child: ChildProcess = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    if (child.pid === undefined) {
      await new Promise((r) => child.once('error', r));
      throw new Error(`bootGuest: failed to spawn ${argv[0]}`);
    }
    pid = child.pid;
    const childPid = pid;
    const unregister = onExit(() => {
      try {
        process.kill(childPid, 'SIGKILL');
      } catch {
        /* gone */
      }
    });
    live.set(pid, { tmp: tmp.path });

    let output = '';
    let stderr = '';
    let bootMs: number | undefined;
    let exitedFlag = false;
    let exitReason = '';
    type Waiter = { re: RegExp; from: number; resolve: (m: RegExpMatchArray) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; desc: string };
    const waiters = new Set<Waiter>();

    // waitFor only looks at complete lines (so /QNET x (\w+)/ never matches half a line),
    // except after exit, when the whole output is final.
    const visible = (): string => (exitedFlag ? output : output.slice(0, output.lastIndexOf('\n') + 1));
    const check = (): void => {
      if (bootMs === undefined && READY_MARKER.test(output)) bootMs = Date.now() - startedAt;
      const text = visible();
      for (const w of waiters) {
        const m = text.slice(w.from).match(w.re);
        if (m) {
          waiters.delete(w);
          clearTimeout(w.timer);
          w.resolve(m);
        } else if (exitedFlag) {
          waiters.delete(w);
          clearTimeout(w.timer);
          w.reject(new Error(`guest ${name}: ${exitReason} while waiting for ${w.desc}\n${diag()}`));
        }
      }
    };
    const diag = (): string =>
      `--- last console output (${name}, accel ${accel}) ---\n${tail(output)}` + (stderr.trim() ? `\n--- qemu stderr ---\n${tail(stderr, 1024)}` : '');

    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      output += d.replace(/\r/g, '');
      check();
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => (stderr += d));
    child.stdin!.on('error', () => {});

    const lifetime = setTimeout(() => {
      exitReason = `guest lifetime of ${opts.timeoutMs ?? 120_000} ms exceeded`;
      try {
        process.kill(childPid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, opts.timeoutMs ?? 120_000);
    lifetime.unref();

    const exited = new Promise<number | null>((resolveP) => {
      let done = false;
      const finish = (code: number | null, sig: NodeJS.Signals | null): void => {
        if (done) return;
        done = true;
        clearTimeout(lifetime);
        unregister();
        live.delete(childPid);
        tmp.remove();
        exitedFlag = true;
        exitReason ||= `QEMU exited (code ${code}${sig ? `, signal ${sig}` : ''})`;
        check();
        resolveP(code);
      };
      // 'close' fires after stdout is drained, so output is complete
      child.on('close', finish);
      child.on('error', (e) => {
        stderr += `\nspawn error: ${e.message}`;
        finish(null, null);
      });
    });

    const guest: Guest = {
      name,
      pid,
      accel,
      get output() {
        return output;
      },
      get stderr() {
        return stderr;
      },
      get bootMs() {
        return bootMs;
      },
      exited,
      waitFor(re: RegExp, timeoutMs: number, o?: { from?: number }): Promise<RegExpMatchArray> {
        const plain = re.flags.includes('g') ? new RegExp(re.source, re.flags.replace('g', '')) : re;
        const from = o?.from ?? 0;
        const m = visible().slice(from).match(plain);
        if (m) return Promise.resolve(m);
        if (exitedFlag) return Promise.reject(new Error(`guest ${name}: ${exitReason} while waiting for ${plain}\n${diag()}`));
        return new Promise((resolveP, rejectP) => {
          const w: Waiter = {
            re: plain,
            from,
            resolve: resolveP,
            reject: rejectP,
            desc: String(plain),
            timer: setTimeout(() => {
              waiters.delete(w);
              rejectP(new Error(`guest ${name}: timed out after ${timeoutMs} ms waiting for ${plain}\n${diag()}`));
            }, timeoutMs),
          };
          waiters.add(w);
        });
      },
      waitForExit(timeoutMs: number): Promise<number | null> {
        let timer: NodeJS.Timeout | undefined;
        const t = new Promise<never>((_, rejectP) => {
          timer = setTimeout(() => rejectP(new Error(`guest ${name}: did not exit within ${timeoutMs} ms\n${diag()}`)), timeoutMs);
        });
        return Promise.race([exited, t]).finally(() => clearTimeout(timer));
      },
      results() {
        return parseResults(output);
      },
      write(data: string) {
        if (!exitedFlag) child.stdin!.write(data);
      },
      async kill() {
        if (!exitedFlag) {
          exitReason ||= 'guest killed';
          try {
            process.kill(childPid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        await exited;
      },
    };
    return guest;
  } catch (e) {
    if (pid < 0) tmp.remove();
    throw e;
  }
}

/** Kill every guest this process started (SIGKILL) and wait for none; for after() hooks. */
export function killAllGuests(): void {
  for (const pid of live.keys()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
