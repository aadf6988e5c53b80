// The kernel as qnet's PCI code sees it: a sysfs root (default /sys), a procfs and a devfs
// root, the `ip` tool, and modprobe. Every host operation goes through one Host, so the same
// code runs on the machine's kernel, on a fixture tree (tests; `--sysfs DIR`), or inside a
// test guest.
//
// Reads are synchronous and cheap (sysfs attributes are a page at most); a missing file reads
// as undefined, because sysfs attributes come and go with drivers (sriov_numvfs only exists
// on SR-IOV capable devices, driver/ only while one is bound). Writes go through one function
// that opens an existing file write-only (never creating one: a typo must not leave a regular
// file on a fixture or fail obscurely on sysfs) and writes the value in one write(2), as the
// kernel's store handlers expect; errors name the file, the value and errno's meaning.
//
// Network state the kernel keeps outside sysfs (addresses, routes, VF MAC/VLAN set through the
// PF) is read and changed with `ip -json`, the tool users already trust for it. On a fixture
// tree there is no kernel behind `ip`: the caller supplies a stand-in (tests), or names one
// with QNET_IP, or the operation fails saying so; qnet never runs the machine's `ip` against
// a tree that is not the machine's.
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';

/** Runs `ip ARGS...` and resolves with its stdout; rejects with its stderr in the message. */
export type IpRunner = (args: string[]) => Promise<string>;

export interface HostOptions {
  /** sysfs root (default /sys) */
  sysfs?: string;
  /** procfs root (default /proc) */
  procfs?: string;
  /** devfs root (default /dev) */
  devfs?: string;
  /** the `ip` tool (default: ip from PATH for the live kernel; $QNET_IP or nothing for a fixture) */
  ip?: IpRunner;
  /** loads a kernel module (default: modprobe, for the live kernel only) */
  modprobe?: (module: string) => Promise<void>;
  /** writes a sysfs attribute (default: open O_WRONLY + one write); tests hook a fake kernel here */
  write?: (file: string, value: string) => void;
}

/** A sysfs write the kernel refused (or a file that is not there). */
export class HostWriteError extends Error {
  constructor(message: string, readonly code?: string) { super(message); }
}

const ERRNO_TEXT: Record<string, string> = {
  EBUSY: 'device or resource busy',
  EINVAL: 'invalid argument',
  ENODEV: 'no such device',
  ENOENT: 'no such file (the attribute or driver is not there)',
  EACCES: 'permission denied (sysfs writes need root)',
  EPERM: 'operation not permitted (sysfs writes need root)',
  ERANGE: 'value out of range',
  EEXIST: 'already exists',
  ENOMEM: 'out of memory',
  EIO: 'I/O error',
};

function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${(stderr || err.message).trim()}`));
      else resolve(stdout);
    });
  });
}

function defaultWrite(file: string, value: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HostWriteError(`cannot open ${file} for writing: ${ERRNO_TEXT[code ?? ''] ?? (e as Error).message}`, code);
  }
  try {
    fs.writeSync(fd, value);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HostWriteError(`writing ${JSON.stringify(value)} to ${file} failed: ${code ?? ''} (${ERRNO_TEXT[code ?? ''] ?? (e as Error).message})`, code);
  } finally {
    fs.closeSync(fd);
  }
}

export class Host {
  readonly sys: string;
  readonly proc: string;
  readonly dev: string;
  /** true when this is the running kernel's /sys (the default) */
  readonly live: boolean;
  private readonly writer: (file: string, value: string) => void;
  private readonly ipRunner?: IpRunner;
  private readonly modprobeFn?: (module: string) => Promise<void>;

  constructor(o: HostOptions = {}) {
    this.sys = path.resolve(o.sysfs ?? '/sys');
    this.live = this.sys === '/sys';
    this.proc = path.resolve(o.procfs ?? '/proc');
    this.dev = path.resolve(o.devfs ?? '/dev');
    this.writer = o.write ?? defaultWrite;
    const envIp = process.env.QNET_IP;
    this.ipRunner = o.ip ?? (this.live ? (a) => run('ip', a) : envIp ? (a) => run(envIp, a) : undefined);
    this.modprobeFn = o.modprobe ?? (this.live ? async (m) => { await run('modprobe', [m], 60_000); } : undefined);
  }

  /** absolute path of a sysfs-relative one ('bus/pci/devices') */
  path(rel: string): string { return path.join(this.sys, rel); }

  exists(rel: string): boolean { return fs.existsSync(this.path(rel)); }

  /** an attribute's text without the trailing newline, or undefined when it is not there */
  read(rel: string): string | undefined {
    try { return fs.readFileSync(this.path(rel), 'utf8').replace(/\n$/, ''); } catch { return undefined; }
  }

  readInt(rel: string): number | undefined {
    const s = this.read(rel);
    if (s === undefined) return undefined;
    const n = Number.parseInt(s.trim(), s.trim().startsWith('0x') ? 16 : 10);
    return Number.isNaN(n) ? undefined : n;
  }

  /** a symlink's target as an absolute path (resolved against its directory), or undefined */
  link(rel: string): string | undefined {
    const p = this.path(rel);
    // relative targets are relative to the link's real directory (sysfs paths pass through
    // symlinked directories such as bus/pci/devices/BDF)
    try { return path.resolve(fs.realpathSync(path.dirname(p)), fs.readlinkSync(p)); } catch { return undefined; }
  }

  /** the last component of a symlink's target: the driver's name for `.../driver` */
  linkName(rel: string): string | undefined {
    const t = this.link(rel);
    return t === undefined ? undefined : path.basename(t);
  }

  /** a directory's entries, sorted; [] when it is not there */
  list(rel: string): string[] {
    try { return fs.readdirSync(this.path(rel)).sort(); } catch { return []; }
  }

  /** write one sysfs attribute (absolute path inside the sysfs root, or relative to it) */
  write(fileOrRel: string, value: string): void {
    const file = path.isAbsolute(fileOrRel) ? fileOrRel : this.path(fileOrRel);
    if (file !== this.sys && !file.startsWith(this.sys + path.sep)) throw new HostWriteError(`refusing to write ${file}: it is outside the sysfs root ${this.sys}`);
    this.writer(file, value);
  }

  procRead(rel: string): string | undefined {
    try { return fs.readFileSync(path.join(this.proc, rel), 'utf8'); } catch { return undefined; }
  }

  devPath(rel: string): string { return path.join(this.dev, rel); }

  get canRunIp(): boolean { return this.ipRunner !== undefined; }

  /** `ip ARGS...`; on a fixture without a stand-in this fails, never touching the machine */
  ip(args: string[]): Promise<string> {
    if (!this.ipRunner) {
      return Promise.reject(new Error(`cannot run 'ip ${args.join(' ')}' for the sysfs tree ${this.sys}: it is not this machine's kernel (set QNET_IP to a stand-in for ip, or use --sysfs /sys)`));
    }
    return this.ipRunner(args);
  }

  /** `ip -json ARGS...` parsed; '' (some ip versions print nothing for no match) is [] */
  async ipJson<T = unknown>(args: string[]): Promise<T[]> {
    const out = (await this.ip(['-json', ...args])).trim();
    if (out === '') return [];
    try {
      const v = JSON.parse(out) as unknown;
      return Array.isArray(v) ? (v as T[]) : [v as T];
    } catch {
      throw new Error(`ip -json ${args.join(' ')} printed something that is not JSON: ${out.slice(0, 200)}`);
    }
  }

  get canModprobe(): boolean { return this.modprobeFn !== undefined; }

  async modprobe(module: string): Promise<void> {
    if (!this.modprobeFn) throw new Error(`cannot load ${module} for the sysfs tree ${this.sys}: it is not this machine's kernel`);
    await this.modprobeFn(module);
  }
}

/** 0000:01:10.0: domain, bus, slot (device), function, lower-case hex */
export const BDF_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/;

/** '01:10.0', '0000:01:10.0', '0000:01:10.0 ' -> '0000:01:10.0'; undefined if it is not one */
export function normalizeBdf(s: string): string | undefined {
  const m = /^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/.exec(s.trim());
  if (!m) return undefined;
  const slot = parseInt(m[3], 16);
  if (slot > 0x1f) return undefined;
  return `${(m[1] ?? '0').padStart(4, '0')}:${m[2].padStart(2, '0')}:${m[3].padStart(2, '0')}.${m[4]}`.toLowerCase();
}
