// Loader for the qnet_sys native addon (native/qnet_sys.c, built by node-gyp during
// `npm ci` / `npm rebuild` because binding.gyp sits at the repository root).
//
// The addon provides what Node lacks: unix datagram sockets, ICMP echo sockets (ping and
// raw, both families) and tap devices. Each is a non-blocking fd watched on Node's own libuv loop; on readiness the
// native side drains the fd into a receive buffer owned by JS and makes one callback per
// wakeup with the number of datagrams; their offsets/lengths are in a Uint32Array.
import os from 'node:os';
import { addonPath, loadNative, nativeFailure, repoRoot } from '../util/native.ts';

/** An opaque native handle (a wrapped fd plus its poll handle). */
export interface SysHandle { readonly __qnetSysHandle: unique symbol }

/** cb(count, senders (unix: path or null per datagram), errno (0, or a fatal read error)). */
export type BatchCallback = (count: number, senders: (string | null)[] | undefined, errno: number) => void;

export interface QnetSys {
  /** u32 per datagram in the info array: offset, real length, IPv4, flags, original dst, IPv6 peer (4), IPv6 original dst (4). */
  readonly STRIDE: number;
  /** Most datagrams drained per wakeup. */
  readonly MAX_BATCH: number;
  openUnixDgram(path: string, bufBytes: number): SysHandle;
  /** An ICMP echo socket: a ping socket, or a raw one (CAP_NET_RAW). */
  openIcmp(family: 4 | 6, raw: boolean): SysHandle;
  openTap(name: string): [SysHandle, string];
  /** AF_PACKET on one interface; filter: classic BPF (8-byte instructions) or null for all frames */
  openPacket(ifname: string, filter: Buffer | null): SysHandle;
  start(h: SysHandle, buf: Buffer, info: Uint32Array, slot: number, cb: BatchCallback): void;
  /** 0 or an errno. */
  sendUnix(h: SysHandle, buf: Buffer, path: string): number;
  /** buf starts at the ICMP header; dst is an IPv4 address as u32, or 16 bytes of IPv6. 0 or an errno. */
  sendIcmp(h: SysHandle, buf: Buffer, dst: number | Buffer): number;
  /** 0 or an errno. */
  write(h: SysHandle, buf: Buffer): number;
  /** The bound port: for an ICMP echo socket, the kernel-assigned echo identifier. */
  localPort(h: SysHandle): number;
  setRef(h: SysHandle, on: boolean): void;
  close(h: SysHandle): void;
}

/** flags bit in info[3]: this entry is an ICMP error from the error queue (type << 8 | code below). */
export const ICMP_ERR_FLAG = 0x80000000;

export { addonPath };

/** The addon; throws a clear error when it has not been built. */
export function sys(): QnetSys {
  const s = loadNative<QnetSys>();
  if (s) return s;
  throw new Error(
    `qnet native addon not available (${addonPath}): ${nativeFailure()}. ` +
    `Build it with \`npm rebuild\` in ${repoRoot} (needs a C compiler, python3 and make; npm ci does this automatically).`,
  );
}

/** Whether the addon loads (for tests and feature checks). */
export function sysAvailable(): boolean {
  try { sys(); return true; } catch { return false; }
}

/** Name of an errno number returned by the send functions, e.g. 'EAGAIN'. */
export function errnoName(n: number): string {
  for (const [k, v] of Object.entries(os.constants.errno)) if (v === n) return k;
  return `errno ${n}`;
}

/** Error thrown by the addon: has .code ('EACCES', ...) and .errno. */
export function sysErrorCode(e: unknown): string | undefined {
  return e instanceof Error ? (e as NodeJS.ErrnoException).code : undefined;
}

/**
 * Receive buffers for one handle: `slot` bytes of room are needed per datagram (datagrams
 * are packed), so bytes >= slot; info holds MAX_BATCH entries.
 */
export function receiveBuffers(bytes: number): { buf: Buffer; info: Uint32Array } {
  const s = sys();
  return { buf: Buffer.alloc(bytes), info: new Uint32Array(s.STRIDE * s.MAX_BATCH) };
}

/** IPv4 dotted quad <-> u32 (host order). */
export function ipToU32(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`bad IPv4 address: ${ip}`);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}
export function u32ToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}
