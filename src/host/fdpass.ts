// Passing descriptors over the API socket, and who is on the other end of it.
//
//   server side   peerCredentials(socket): uid, gid, groups and pid from the kernel
//                 (SO_PEERCRED, SO_PEERGROUPS), never from anything the caller says;
//                 sendWithFds(socket, bytes, fds): the bytes with the descriptors attached to
//                 the first of them (SCM_RIGHTS), written past Node's stream (the socket must
//                 have nothing else queued: the API writes a whole reply this way, then closes).
//   client side   fdRequest(path, method, url, body): one HTTP/1.1 request with
//                 `Connection: close`, read to EOF with recvmsg, returning the status, the JSON
//                 body and every descriptor that came with it.
//
// The receiver owns the descriptors it gets; closeFd() them when done (QEMU gets its copy by
// inheritance). The wire format is ordinary HTTP, so the same route answers a plain client
// with an error explaining that this route hands out descriptors.
import type net from 'node:net';
import { hostNative, type PeerCred } from './native.ts';

export type { PeerCred };

/** The kernel descriptor behind a connected Node socket (unix sockets on Linux). */
export function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('this connection has no file descriptor (only unix socket connections can pass descriptors)');
  return fd;
}

export function peerCredentials(socket: net.Socket): PeerCred {
  return hostNative().peerCred(socketFd(socket));
}

/** Write bytes with descriptors attached; throws with the errno name on failure. */
export function sendWithFds(socket: net.Socket, data: Buffer, fds: number[], timeoutMs = 5000): void {
  const e = hostNative().sendFds(socketFd(socket), data, fds, timeoutMs);
  if (e !== 0) throw new Error(`cannot pass descriptors to the client: errno ${e}`);
}

export function closeFd(fd: number): void {
  hostNative().closeFd(fd);
}

export interface FdResponse<T = unknown> { status: number; body: T; fds: number[] }

/** One HTTP request over a unix socket that may answer with descriptors. */
export function fdRequest<T = unknown>(socketPath: string, method: string, url: string, body?: unknown, timeoutMs = 30_000): FdResponse<T> {
  const payload = body === undefined ? '' : JSON.stringify(body);
  const head = [
    `${method} ${url} HTTP/1.1`, 'Host: qnet', 'Accept: application/json', 'Connection: close',
    ...(payload ? ['Content-Type: application/json', `Content-Length: ${Buffer.byteLength(payload)}`] : ['Content-Length: 0']),
  ].join('\r\n');
  const res = hostNative().unixRequest(socketPath, Buffer.from(`${head}\r\n\r\n${payload}`), timeoutMs);
  const text = res.data.toString('utf8');
  const split = text.indexOf('\r\n\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  if (split < 0 || !m) {
    for (const fd of res.fds) closeFd(fd);
    throw new Error(`the qnet daemon sent no HTTP response to ${method} ${url}`);
  }
  let parsed: unknown = text.slice(split + 4);
  try { parsed = JSON.parse(parsed as string); } catch { /* not JSON: leave the text */ }
  return { status: Number(m[1]), body: parsed as T, fds: res.fds };
}
