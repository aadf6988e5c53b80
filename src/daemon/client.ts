// A small client for the daemon's control API (api.ts). Speaks HTTP/1.1 + JSON over the
// daemon's unix socket; `http://HOST:PORT` also works for the optional TCP API (the token then
// comes from QNET_API_TOKEN).
//
// The socket is found from `--api PATH`, else $QNET_API, else the default runtime directory
// (paths.ts): `${XDG_RUNTIME_DIR}/qnet/api.sock`, `/run/qnet/api.sock` for root,
// `/tmp/qnet-$UID/api.sock` otherwise; a user without a daemon of their own falls back to the
// system daemon's /run/qnet/api.sock.
import http from 'node:http';
import fs from 'node:fs';
import { defaultApiSocket } from '../common/paths.ts';

/** The system daemon's socket (root's runtime directory), for users who run no daemon of their own. */
export const SYSTEM_API_SOCKET = '/run/qnet/api.sock';

/** The API answered with an error status. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly body?: unknown) { super(message); }
}

/** Nothing to talk to: no socket, a stale socket, or no permission. */
export class DaemonUnreachableError extends Error {}

export function resolveApiAddress(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag || env.QNET_API) return (flag || env.QNET_API)!;
  const own = defaultApiSocket(env);
  // a user with no daemon of their own talks to the system one (kernel networks with allow:)
  if (process.getuid?.() !== 0 && !fs.existsSync(own) && fs.existsSync(SYSTEM_API_SOCKET)) return SYSTEM_API_SOCKET;
  return own;
}

export interface ClientOptions {
  /** request timeout in ms (default 30 s; 0 for none) */
  timeoutMs?: number;
  token?: string;
}

export class ApiClient {
  readonly address: string;
  private readonly tcp?: { host: string; port: number };
  private readonly token?: string;
  private readonly timeoutMs: number;

  constructor(address: string, opts: ClientOptions = {}) {
    this.address = address;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    if (/^https?:\/\//.test(address)) {
      const u = new URL(address);
      if (u.protocol !== 'http:') throw new Error(`only http:// is supported for the TCP API, got ${address}`);
      this.tcp = { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80) };
      this.token = opts.token ?? process.env.QNET_API_TOKEN;
    }
  }

  /** Send a request; resolves to the parsed JSON (or text) body, rejects with ApiError/DaemonUnreachableError. */
  request<T = unknown>(method: string, urlPath: string, body?: unknown, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: http.OutgoingHttpHeaders = { Accept: 'application/json' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(payload);
    }
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const req = http.request({
        ...(this.tcp ? { host: this.tcp.host, port: this.tcp.port } : { socketPath: this.address }),
        method, path: urlPath, headers, signal: opts.signal, agent: false,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const isJson = (res.headers['content-type'] ?? '').startsWith('application/json');
          let parsed: unknown = text;
          if (isJson && text) {
            try { parsed = JSON.parse(text); } catch { reject(new Error(`the qnet daemon sent malformed JSON for ${method} ${urlPath}`)); return; }
          }
          const status = res.statusCode ?? 0;
          if (status >= 400) {
            const msg = parsed && typeof parsed === 'object' && 'error' in parsed ? String((parsed as { error: unknown }).error) : `${status} ${res.statusMessage ?? ''}`.trim();
            reject(new ApiError(status, msg, parsed));
            return;
          }
          resolve(parsed as T);
        });
      });
      if (timeoutMs > 0) {
        req.setTimeout(timeoutMs, () => req.destroy(new Error(`the qnet daemon did not answer ${method} ${urlPath} within ${timeoutMs / 1000} s`)));
      }
      req.on('error', (e: NodeJS.ErrnoException) => reject(this.explain(e)));
      req.end(payload);
    });
  }

  get<T = unknown>(p: string): Promise<T> { return this.request<T>('GET', p); }
  post<T = unknown>(p: string, body: unknown = {}, opts?: { timeoutMs?: number; signal?: AbortSignal }): Promise<T> { return this.request<T>('POST', p, body, opts); }
  del<T = unknown>(p: string): Promise<T> { return this.request<T>('DELETE', p); }

  private explain(e: NodeJS.ErrnoException): Error {
    if (e.name === 'AbortError') return e;
    const where = this.tcp ? `http://${this.tcp.host}:${this.tcp.port}` : this.address;
    switch (e.code) {
      case 'ENOENT':
        return new DaemonUnreachableError(`qnet daemon not running: no API socket at ${where}; start it with \`qnet up\` (or point at it with --api PATH / QNET_API)`);
      case 'ECONNREFUSED':
        return new DaemonUnreachableError(this.tcp
          ? `qnet daemon not reachable: nothing listens on ${where}; start it with \`qnet up\``
          : `qnet daemon not running: ${where} is a stale socket with nothing listening; start it with \`qnet up\``);
      case 'EACCES':
      case 'EPERM':
        return new DaemonUnreachableError(`permission denied on the qnet API socket ${where}: it belongs to another user; run qnet as the user who started the daemon`);
      case 'ENOTSOCK':
        return new DaemonUnreachableError(`${where} is not a socket; pass the daemon's API socket with --api PATH`);
      default:
        return new Error(`cannot reach the qnet daemon at ${where}: ${e.message}`);
    }
  }
}

/** A client for the address from `--api`, $QNET_API or the default runtime directory. */
export function connectApi(flag?: string, opts?: ClientOptions): ApiClient {
  return new ApiClient(resolveApiAddress(flag), opts);
}

/** `encodeURIComponent` for one path segment. */
export const seg = (s: string): string => encodeURIComponent(s);
