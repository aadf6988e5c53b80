// The daemon's control API: HTTP/1.1 + JSON over a unix socket (node:http, no framework),
// mapping routes onto a DaemonControl.
//
// Access control: the socket is created 0600 inside a 0700 directory, so only its owner (and
// root) can connect. When kernel networks name other users (`allow:`), the socket is `shared`:
// 0666 in a 0755 directory, and every request is authorised by the peer credentials of its
// connection (SO_PEERCRED, never anything the caller says): root and the daemon's own user may
// do everything, others only the routes marked for users (status, attach, taps, their own VMs),
// and the daemon checks each network's allow list (DaemonControl.authorize and the methods).
// Optionally the same API also listens on TCP, for tools that cannot speak to a unix socket;
// that listener is loopback-only unless `allowNonLoopback` is set, and always requires
// `Authorization: Bearer TOKEN` (compared in constant time), checked before anything else of
// the request (body, route) is read; a request without it is answered 401 and its
// connection closed. Both listeners cap their connections and time out slow or idle ones
// (api-limits.ts), so no local user can starve the daemon of descriptors through the API.
//
// Captures: the API never takes a path (it would write as the daemon's user, wherever it was
// told). It streams the pcap in the response body (application/vnd.tcpdump.pcap, chunked,
// with the frame counts as trailers) and `qnet capture -w FILE` writes the file as the user
// who runs it. A client that does not read fast enough loses frames (counted), never memory.
//
// Descriptor handover: a handler may answer with an FdReply; the whole HTTP response is then
// written with the descriptors attached (SCM_RIGHTS) past Node's stream, the connection is
// closed and the daemon's copies of the descriptors too. Only on the unix socket.
//
// Responses are JSON (`GET /metrics` is Prometheus text). Errors are `{"error": "message"}`:
// 404 for NotFoundError and unknown routes (with the list of routes), 405 for a known path with
// another method, 400/409 for BadRequestError, 413 for bodies over 1 MB, 500 otherwise.
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { PcapWriter } from '../switch/pcap.ts';
import { LimitLog, type LimitReporter } from '../util/limits.ts';
import { logger } from '../util/log.ts';
import { TCP_API_LIMITS, UNIX_API_LIMITS, guardConnections, serverOptions, type ConnectionGuard } from './api-limits.ts';
import {
  BadRequestError, ForbiddenError, NotFoundError,
  type DaemonControl, type ForwardRequest, type PeerCred, type TapRequest, type VmRecord,
} from './types.ts';
import { closeFd, peerCredentials, sendWithFds } from '../host/fdpass.ts';

export interface ApiOptions {
  /** unix socket path (its parent directory is created 0700; the socket is made 0600) */
  socketPath: string;
  /** optional TCP listener (off unless given) */
  tcp?: { host: string; port: number; token: string; allowNonLoopback?: boolean };
  /** request body limit in bytes (default 1 MiB) */
  maxBody?: number;
  /** other users may connect (0666 socket in a 0755 directory); requests are authorised by peer credentials */
  shared?: boolean;
  /** where connection-limit hits are reported (default: logged here) */
  limits?: LimitReporter;
}

export interface ApiServer {
  socketPath: string;
  tcpPort?: number;
  close(): Promise<void>;
}

export const MAX_BODY = 1 << 20;
/** the longest a timed capture may run (one day) */
export const MAX_CAPTURE_SECONDS = 86400;
/** a capture client this far behind loses frames */
export const CAPTURE_MAX_BUFFERED = 8 << 20;
export const PCAP_CONTENT_TYPE = 'application/vnd.tcpdump.pcap';

const log = logger('api');

type Params = Record<string, string>;
interface Ctx { params: Params; body: () => Promise<unknown>; req: http.IncomingMessage; res: http.ServerResponse; who: PeerCred | null }
/** a handler returns a JSON-able value (200), or a Reply for another status/content type */
type Handler = (ctx: Ctx) => unknown | Promise<unknown>;
class Reply {
  constructor(readonly status: number, readonly body: unknown, readonly contentType = 'application/json') {}
}
/** A JSON reply with descriptors attached (unix socket only); the API closes its copies. */
export class FdReply {
  constructor(readonly status: number, readonly body: unknown, readonly fds: number[]) {}
}
interface Route { method: string; pattern: string; parts: string[]; handler: Handler; userRoute: boolean }

interface Capture { id: string; network: string; port?: string; startedAt: number; writer: PcapWriter; stop(): void }

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const h = host.replace(/^\[|\]$/g, '');
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) return h === '::1' || /^::ffff:127\./i.test(h);
  return false;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  // hash both sides so timingSafeEqual compares equal-length buffers whatever was sent
  const a = crypto.createHash('sha256').update(m ? m[1] : '').digest();
  const b = crypto.createHash('sha256').update(token).digest();
  return crypto.timingSafeEqual(a, b) && m !== null;
}

function str(body: Record<string, unknown>, key: string, required: boolean): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) {
    if (required) throw new BadRequestError(`missing '${key}' (a string) in the request body`);
    return undefined;
  }
  if (typeof v !== 'string' || v === '') throw new BadRequestError(`'${key}' must be a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

function int(body: Record<string, unknown>, key: string, required: boolean, min: number, max: number): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) {
    if (required) throw new BadRequestError(`missing '${key}' (an integer ${min}-${max}) in the request body`);
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new BadRequestError(`'${key}' must be an integer ${min}-${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function object(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BadRequestError('the request body must be a JSON object');
  return v as Record<string, unknown>;
}

export function parseForwardSpec(v: unknown): ForwardRequest {
  const b = object(v);
  const proto = b.proto ?? 'tcp';
  if (proto !== 'tcp' && proto !== 'udp') throw new BadRequestError(`'proto' must be "tcp" or "udp", got ${JSON.stringify(proto)}`);
  const hostAddr = str(b, 'hostAddr', false);
  if (hostAddr !== undefined && net.isIP(hostAddr) === 0) throw new BadRequestError(`'hostAddr' must be an IP address, got ${JSON.stringify(hostAddr)}`);
  const spec: ForwardRequest = {
    proto,
    hostPort: int(b, 'hostPort', true, 0, 65535)!,
    guest: str(b, 'guest', true)!,
    guestPort: int(b, 'guestPort', true, 1, 65535)!,
  };
  if (hostAddr !== undefined) spec.hostAddr = hostAddr;
  return spec;
}

export function parseVmRecord(v: unknown): VmRecord {
  const b = object(v);
  const name = str(b, 'name', true)!;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name)) throw new BadRequestError(`VM name '${name}' is not valid: use letters, digits, '_', '.', '-' (at most 63)`);
  const mac = str(b, 'mac', true)!;
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new BadRequestError(`'mac' must look like 52:54:00:12:34:56, got '${mac}'`);
  const qmp = str(b, 'qmp', true)!;
  // a VM on a kernel network has a tap, one on a hostdev network a VF: neither has a stream socket
  const tap = str(b, 'tap', false);
  const sock = str(b, 'sock', false);
  if (!path.isAbsolute(qmp) || (sock !== undefined && !path.isAbsolute(sock))) throw new BadRequestError("'qmp' and 'sock' must be absolute paths");
  return {
    name,
    network: str(b, 'network', true)!,
    mac: mac.toLowerCase(),
    model: str(b, 'model', false) ?? 'virtio-net-pci',
    pid: int(b, 'pid', true, 1, 0x7fffffff)!,
    qmp,
    ...(sock !== undefined ? { sock } : {}),
    ...(tap !== undefined ? { tap } : {}),
    startedAt: int(b, 'startedAt', false, 0, Number.MAX_SAFE_INTEGER) ?? Date.now(),
  };
}

export function parseTapRequest(v: unknown, network?: string): TapRequest {
  const b = object(v);
  const vm = str(b, 'vm', true)!;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(vm)) throw new BadRequestError(`VM name '${vm}' is not valid: use letters, digits, '_', '.', '-' (at most 63)`);
  const req: TapRequest = { vm, network: network ?? str(b, 'network', false), bridge: str(b, 'bridge', false) };
  if (!req.network && !req.bridge) throw new BadRequestError("give 'network' or 'bridge'");
  for (const k of ['vnetHdr', 'vhost'] as const) {
    if (b[k] !== undefined) {
      if (typeof b[k] !== 'boolean') throw new BadRequestError(`'${k}' must be true or false`);
      req[k] = b[k];
    }
  }
  return req;
}

function compile(method: string, pattern: string, handler: Handler, userRoute = false): Route {
  return { method, pattern, parts: pattern.split('/').filter(Boolean), handler, userRoute };
}

function match(route: Route, segs: string[]): Params | null {
  if (route.parts.length !== segs.length) return null;
  const params: Params = {};
  for (let i = 0; i < segs.length; i++) {
    const p = route.parts[i];
    if (p.startsWith(':')) params[p.slice(1)] = segs[i];
    else if (p !== segs[i]) return null;
  }
  return params;
}

function buildRoutes(control: DaemonControl, captures: Map<string, Capture>): Route[] {
  let nextCapture = 1;
  const captureInfo = (c: Capture) => ({ id: c.id, network: c.network, port: c.port ?? null, startedAt: c.startedAt, frames: c.writer.frames, dropped: c.writer.dropped });

  /**
   * Stream a capture as the response: until `seconds` pass, the client goes away, the capture
   * is stopped (POST /v1/captures/ID/stop) or its network or port goes. The pcap header goes
   * out first; frames follow in batches; the counts come as trailers at the end.
   */
  const streamCapture = (network: string, port: string | undefined, seconds: number | undefined, res: http.ServerResponse): void => {
    let started = false;
    const early: Buffer[] = [];
    const writer = new PcapWriter((d) => {
      if (res.destroyed || res.writableEnded) return false;
      if (!started) { early.push(Buffer.from(d)); return true; }
      if (res.writableLength > CAPTURE_MAX_BUFFERED) return false;
      res.write(Buffer.from(d));
      return true;
    });
    let handle: { stop(): unknown };
    try {
      handle = control.startCapture(network, writer, port);
    } catch (e) {
      writer.close();
      throw e;
    }
    const id = String(nextCapture++);
    const cap: Capture = { id, network, port, startedAt: Date.now(), writer, stop: () => { handle.stop(); writer.close(); } };
    captures.set(id, cap);
    const timer = seconds === undefined ? null : setTimeout(() => cap.stop(), seconds * 1000);
    writer.onClose(() => {
      captures.delete(id);
      if (timer) clearTimeout(timer);
      res.off('close', onGone);
      if (res.destroyed || res.writableEnded) return;
      res.addTrailers({ 'X-Qnet-Frames': String(writer.frames), 'X-Qnet-Dropped': String(writer.dropped) });
      res.end();
    });
    const onGone = (): void => cap.stop();
    res.on('close', onGone);
    res.socket?.setTimeout(0); // a quiet network is not an idle client
    res.writeHead(200, {
      'Content-Type': PCAP_CONTENT_TYPE, 'Cache-Control': 'no-store', 'X-Qnet-Capture-Id': id,
      Trailer: 'X-Qnet-Frames, X-Qnet-Dropped',
    });
    started = true;
    for (const b of early.splice(0)) res.write(b);
  };

  return [
    compile('GET', '/v1/status', () => control.status(), true),
    compile('GET', '/v1/networks', () => control.networks()),
    compile('GET', '/v1/networks/:name', ({ params }) => control.network(params.name)),
    compile('GET', '/v1/networks/:name/leases', ({ params }) => control.leases(params.name)),
    compile('GET', '/v1/leases', () => control.leases()),
    compile('GET', '/v1/networks/:name/ports', async ({ params }) => (await control.network(params.name)).ports),
    compile('GET', '/v1/networks/:name/forwards', ({ params }) => control.forwards(params.name)),
    compile('GET', '/v1/forwards', () => control.forwards()),
    compile('POST', '/v1/networks/:name/forwards', async ({ params, body }) => {
      const spec = parseForwardSpec(await body());
      await control.network(params.name); // 404 before anything else for a missing network
      return new Reply(201, await control.addForward(params.name, spec));
    }),
    compile('DELETE', '/v1/networks/:name/forwards/:id', ({ params }) => {
      const removed = control.removeForward(params.name, params.id);
      if (removed.length === 0) throw new NotFoundError(`no forward '${params.id}' on network '${params.name}' (see GET /v1/networks/${params.name}/forwards)`);
      return { removed };
    }),
    compile('POST', '/v1/networks/:name/capture', async ({ params, body, res }) => {
      const b = object(await body());
      if (b.path !== undefined) {
        throw new BadRequestError("the API does not write capture files (it would write them as the daemon's user): it streams the pcap in its response; use `qnet capture NET -w FILE`, which writes FILE as you");
      }
      let port: string | undefined;
      if (typeof b.port === 'number') port = String(b.port);
      else port = str(b, 'port', false);
      const seconds = b.seconds === undefined || b.seconds === null ? undefined : b.seconds;
      if (seconds !== undefined && (typeof seconds !== 'number' || !(seconds > 0) || seconds > MAX_CAPTURE_SECONDS)) {
        throw new BadRequestError(`'seconds' must be a number in (0, ${MAX_CAPTURE_SECONDS}], got ${JSON.stringify(seconds)}`);
      }
      control.network(params.name); // 404 before anything else for a missing network
      streamCapture(params.name, port, seconds, res);
      return STREAMED;
    }),
    compile('GET', '/v1/captures', () => [...captures.values()].map(captureInfo)),
    compile('POST', '/v1/captures/:id/stop', ({ params }) => {
      const cap = captures.get(params.id);
      if (!cap) throw new NotFoundError(`no running capture '${params.id}' (see GET /v1/captures)`);
      cap.stop();
      return { ...captureInfo(cap), seconds: (Date.now() - cap.startedAt) / 1000 };
    }),
    compile('GET', '/metrics', () => new Reply(200, control.metrics(), 'text/plain; version=0.0.4; charset=utf-8')),
    compile('POST', '/v1/networks/:name/attach', async ({ params, body, who }) => {
      const b = object(await body());
      const name = str(b, 'name', true)!;
      const mac = str(b, 'mac', false);
      if (mac !== undefined && !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new BadRequestError(`'mac' must look like 52:54:00:12:34:56, got '${mac}'`);
      // a VF pool hands its VF to the caller's process (pid), the VM's holder until QEMU registers
      const vf = control.attachHostdev?.(params.name, name, int(b, 'pid', false, 1, 0x7fffffff), { mac: mac?.toLowerCase(), who });
      return vf ?? control.attach(params.name, name, str(b, 'model', false), mac?.toLowerCase(), who);
    }, true),
    compile('GET', '/v1/vms', ({ who }) => control.vms(who), true),
    compile('POST', '/v1/vms', async ({ body, who }) => {
      const vm = parseVmRecord(await body());
      control.connectVm(vm, who);
      return new Reply(201, vm);
    }, true),
    compile('DELETE', '/v1/vms/:name', async ({ params, who }) => {
      await control.disconnectVm(params.name, who);
      return { removed: params.name };
    }, true),
    // kernel networks: taps handed over with their descriptors, and QEMU's own taps (ifup/ifdown)
    compile('POST', '/v1/networks/:name/taps', async ({ params, body, who }) => tapReply(control, parseTapRequest(await body(), params.name), who), true),
    compile('POST', '/v1/taps', async ({ body, who }) => tapReply(control, parseTapRequest(await body()), who), true),
    compile('POST', '/v1/ports', async ({ body, who }) => {
      if (!control.addPort) throw new NotFoundError('this daemon has no kernel networks');
      const b = object(await body());
      return new Reply(201, await control.addPort(str(b, 'ifname', true)!, str(b, 'network', false), str(b, 'vm', false), who));
    }),
    compile('DELETE', '/v1/ports/:ifname', ({ params, req, who }) => {
      if (!control.removePort) throw new NotFoundError('this daemon has no kernel networks');
      const net = new URL(req.url ?? '/', 'http://qnet').searchParams.get('network') ?? undefined;
      return control.removePort(params.ifname, net, who);
    }),
  ];
}

async function tapReply(control: DaemonControl, req: TapRequest, who: PeerCred | null): Promise<FdReply> {
  if (!control.createTap) throw new NotFoundError('this daemon has no kernel networks');
  const { info, fds } = await control.createTap(req, who);
  return new FdReply(201, info, fds);
}

/** Write a whole JSON response with descriptors attached, close the connection and our copies. */
function sendFdReply(res: http.ServerResponse, out: FdReply): void {
  try {
    const text = JSON.stringify(out.body, null, 2) + '\n';
    const head = `HTTP/1.1 ${out.status} ${http.STATUS_CODES[out.status] ?? ''}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n`;
    sendWithFds(res.socket as net.Socket, Buffer.from(head + text), out.fds);
  } finally {
    for (const fd of out.fds) closeFd(fd);
    res.socket?.destroy();
  }
}

function readBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) { reject(new HttpError(413, `request body too large (${declared} bytes; the limit is ${limit})`)); return; }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > limit) { failed = true; reject(new HttpError(413, `request body too large (over ${limit} bytes)`)); return; }
      chunks.push(c);
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') { resolve({}); return; }
      try { resolve(JSON.parse(text)); } catch (e) { reject(new HttpError(400, `the request body is not valid JSON: ${(e as Error).message}`)); }
    });
    req.on('error', reject);
  });
}

/** A handler's return value when it has answered itself (a streamed response). */
const STREAMED = Symbol('streamed');

class HttpError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

function send(res: http.ServerResponse, status: number, body: unknown, contentType = 'application/json', extra: http.OutgoingHttpHeaders = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = contentType.startsWith('application/json') ? JSON.stringify(body, null, 2) + '\n' : String(body);
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store', ...extra });
  res.end(text);
}

function makeHandler(control: DaemonControl, routes: Route[], maxBody: number, guard: ConnectionGuard, token?: string): http.RequestListener {
  const routeList = routes.map((r) => `${r.method} ${r.pattern}`);
  const creds = new WeakMap<net.Socket, PeerCred | null>();
  const whoIs = (req: http.IncomingMessage): PeerCred | null => {
    if (token !== undefined) return null; // the TCP API: the bearer token stands for the owner
    const s = req.socket;
    if (!creds.has(s)) {
      let c: PeerCred | null = null;
      try { c = peerCredentials(s); } catch { c = null; }
      creds.set(s, c);
    }
    return creds.get(s)!;
  };
  return (req, res) => {
    void (async () => {
      try {
        if (token !== undefined && !tokenMatches(req.headers.authorization, token)) {
          // nothing more of this request is read: no body, no route; the connection is closed
          send(res, 401, { error: 'missing or wrong bearer token: send `Authorization: Bearer TOKEN` with the token the daemon was configured with' }, 'application/json', { 'WWW-Authenticate': 'Bearer realm="qnet"', Connection: 'close' });
          res.once('finish', () => req.socket.destroy());
          return;
        }
        guard.authenticated(req.socket);
        const url = new URL(req.url ?? '/', 'http://qnet');
        let segs: string[];
        try {
          segs = url.pathname.split('/').filter(Boolean).map((s) => decodeURIComponent(s));
        } catch {
          throw new HttpError(400, `malformed percent-encoding in ${url.pathname}`);
        }
        const method = req.method ?? 'GET';
        let allowed: string[] = [];
        for (const r of routes) {
          const params = match(r, segs);
          if (!params) continue;
          if (r.method !== method && !(method === 'HEAD' && r.method === 'GET')) { allowed.push(r.method); continue; }
          const who = whoIs(req);
          control.authorize?.(who, { method: r.method, pattern: r.pattern, userRoute: r.userRoute });
          let bodyPromise: Promise<unknown> | undefined;
          const out = await r.handler({ params, req, res, who, body: () => (bodyPromise ??= readBody(req, maxBody)) });
          if (!bodyPromise) req.resume();
          if (out === STREAMED) return;
          if (out instanceof FdReply) {
            if (token !== undefined) {
              for (const fd of out.fds) closeFd(fd);
              throw new BadRequestError('descriptors can only be handed over on the unix socket, not the TCP API');
            }
            sendFdReply(res, out);
          } else if (out instanceof Reply) send(res, out.status, out.body, out.contentType);
          else send(res, 200, out);
          return;
        }
        req.resume();
        allowed = [...new Set(allowed)];
        if (allowed.length) {
          send(res, 405, { error: `${method} is not allowed on ${url.pathname}; use ${allowed.join(' or ')}`, routes: routeList }, 'application/json', { Allow: allowed.join(', ') });
        } else {
          send(res, 404, { error: `no route ${method} ${url.pathname}`, routes: routeList });
        }
      } catch (e) {
        let status = 500;
        if (e instanceof NotFoundError) status = 404;
        else if (e instanceof ForbiddenError) status = 403;
        else if (e instanceof BadRequestError) status = e.status;
        else if (e instanceof HttpError) status = e.status;
        const message = e instanceof Error ? e.message : String(e);
        send(res, status, { error: status === 500 ? `internal error: ${message}` : message });
        if (status === 413) req.destroy(); else req.resume();
      }
    })();
  };
}

/** Is something accepting connections on this unix socket? */
function socketLive(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    const t = setTimeout(() => { s.destroy(); resolve(true); }, 1000); // connected-but-silent counts as live
    s.once('connect', () => { clearTimeout(t); s.destroy(); resolve(true); });
    s.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

async function prepareSocketPath(socketPath: string, shared: boolean): Promise<void> {
  const dir = path.dirname(socketPath);
  const created = fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.statSync(dir);
  if (!st.isDirectory()) throw new Error(`cannot create the API socket: ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (shared && (st.uid === uid || created !== undefined)) {
    fs.chmodSync(dir, 0o755); // other users must reach the socket; every request is checked by peer credentials
  } else if (created !== undefined) {
    fs.chmodSync(dir, 0o700); // umask may have narrowed it, never widened; be explicit
  } else if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
    throw new Error(`refusing to put the API socket in ${dir}: it belongs to uid ${st.uid}, not to you (uid ${uid}); pick another path with --api`);
  }
  let lst: fs.Stats | undefined;
  try { lst = fs.lstatSync(socketPath); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
  if (!lst) return;
  if (!lst.isSocket()) throw new Error(`refusing to replace ${socketPath}: it exists and is not a socket; remove it or pick another path`);
  if (await socketLive(socketPath)) {
    throw new Error(`another qnet daemon is already listening on ${socketPath}; stop it first (or use another --api path)`);
  }
  fs.unlinkSync(socketPath); // stale: left by a daemon that died
}

function listen(server: http.Server, arg: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    server.once('error', onError);
    server.listen(arg, () => { server.off('error', onError); resolve(); });
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) { resolve(); return; }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export async function startApi(control: DaemonControl, opts: ApiOptions): Promise<ApiServer> {
  const maxBody = opts.maxBody ?? MAX_BODY;
  const socketPath = path.resolve(opts.socketPath);
  const tcp = opts.tcp;
  if (tcp) {
    if (!tcp.token) throw new Error('the TCP API needs a token (tcp.token); refusing to start it without one');
    if (!isLoopback(tcp.host) && !tcp.allowNonLoopback) {
      throw new Error(`refusing to serve the TCP API on non-loopback address ${tcp.host}: use 127.0.0.1 or ::1, or set allowNonLoopback if you really mean it`);
    }
  }
  const captures = new Map<string, Capture>();
  const routes = buildRoutes(control, captures);
  const limits = opts.limits ?? new LimitLog(log);

  await prepareSocketPath(socketPath, opts.shared === true);
  const unixServer = http.createServer(serverOptions(UNIX_API_LIMITS));
  const uidOf = (sock: net.Socket): number | null => { try { return peerCredentials(sock).uid; } catch { return null; } };
  unixServer.on('request', makeHandler(control, routes, maxBody, guardConnections(unixServer, UNIX_API_LIMITS, 'api.unix', limits, uidOf, opts.shared === true)));
  // bind with a umask that leaves the socket 0600 from the first instant, then chmod to be sure
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      unixServer.once('error', reject);
      unixServer.listen(socketPath, () => { unixServer.off('error', reject); resolve(); });
      process.umask(oldMask); // listen() binds synchronously; restore at once
    });
  } finally {
    process.umask(oldMask);
  }
  fs.chmodSync(socketPath, opts.shared ? 0o666 : 0o600);

  let tcpServer: http.Server | undefined;
  let tcpPort: number | undefined;
  if (tcp) {
    tcpServer = http.createServer(serverOptions(TCP_API_LIMITS));
    tcpServer.on('request', makeHandler(control, routes, maxBody, guardConnections(tcpServer, TCP_API_LIMITS, 'api.tcp', limits), tcp.token));
    try {
      await listen(tcpServer, { host: tcp.host.replace(/^\[|\]$/g, ''), port: tcp.port });
    } catch (e) {
      await closeServer(unixServer);
      throw new Error(`cannot listen on TCP ${tcp.host}:${tcp.port} for the API: ${(e as Error).message}`);
    }
    tcpPort = (tcpServer.address() as net.AddressInfo).port;
  }

  let closed = false;
  return {
    socketPath,
    tcpPort,
    async close() {
      if (closed) return;
      closed = true;
      for (const c of [...captures.values()]) { try { c.stop(); } catch { /* best effort */ } }
      await Promise.all([closeServer(unixServer), tcpServer ? closeServer(tcpServer) : Promise.resolve()]);
      try { fs.unlinkSync(socketPath); } catch { /* already gone */ }
    },
  };
}
