// Connection limits of the control API's listeners (api.ts), kept apart from the routes.
//
// Without them a local user without the token could open ~20,000 idle TCP connections and
// hold each until Node's 60 s header timeout, taking every descriptor the daemon had: the
// unix API stopped answering and VMs could no longer attach. Now, per listener:
// - at most `maxConnections` at once (Node closes the excess at accept; counted),
// - at most `maxUnauthenticated` that have not yet shown they may talk: a new one beyond that
//   evicts the oldest still waiting, so a flood of idle connections cannot keep a real client
//   out (its request arrives within milliseconds and authenticates it; the flood's never do).
//   On TCP a connection is authenticated by a request with the right token, checked before
//   anything else of the request is read; on the unix socket by its first request (the
//   filesystem already decided who may connect),
// - short timeouts: a connection that has sent no request at all is closed after
//   `firstRequestMs` (the owner's and root's connections on the unix socket get
//   `requestTimeoutMs`: they are trusted, and their clients may merely be slow to be scheduled
//   on a loaded machine or in a TCG guest); a request's headers must be complete within
//   `headersTimeoutMs` of the connection's start (Node's check) and the whole request within `requestTimeoutMs`
//   (Node checks these every second here, not every 30 s as by default); an idle keep-alive
//   connection is closed after `idleTimeoutMs`.
// - on a unix socket other users may reach (`shared`, for kernel networks with an allow
//   list), each other user holds at most `maxPerUser` connections, while the daemon's own
//   user and root count as authenticated from the start (never evicted as waiting ones), so
//   other users cannot crowd the owner out.
// The caps bound what the API can hold, which is what the daemon's descriptor budget reserves
// for it (fdBudget in daemon.ts): guest flows never use that reserve.
import type http from 'node:http';
import type net from 'node:net';
import type { LimitReporter } from '../util/limits.ts';

export interface ApiListenerLimits {
  maxConnections: number;
  maxUnauthenticated: number;
  /** an untrusted connection that has sent no request by then is closed */
  firstRequestMs: number;
  /** Node's: a request's headers complete within this (Node counts it from the connection's start) */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  /** largest request header block */
  maxHeaderBytes: number;
  /** connections one other user may hold on a shared unix socket */
  maxPerUser: number;
}

export const UNIX_API_LIMITS: ApiListenerLimits = {
  maxConnections: 64, maxUnauthenticated: 32, firstRequestMs: 5000, headersTimeoutMs: 30_000, requestTimeoutMs: 30_000, idleTimeoutMs: 5000, maxHeaderBytes: 16 * 1024, maxPerUser: 8,
};
export const TCP_API_LIMITS: ApiListenerLimits = {
  maxConnections: 64, maxUnauthenticated: 16, firstRequestMs: 3000, headersTimeoutMs: 3000, requestTimeoutMs: 30_000, idleTimeoutMs: 5000, maxHeaderBytes: 8 * 1024, maxPerUser: 0,
};

/** Descriptors the API can hold at most (both listeners, their connections). */
export function apiDescriptorReserve(tcp: boolean): number {
  return 1 + UNIX_API_LIMITS.maxConnections + (tcp ? 1 + TCP_API_LIMITS.maxConnections : 0);
}

/** http.createServer options for these limits. */
export function serverOptions(l: ApiListenerLimits): http.ServerOptions {
  return {
    headersTimeout: l.headersTimeoutMs,
    requestTimeout: l.requestTimeoutMs,
    keepAliveTimeout: l.idleTimeoutMs,
    connectionsCheckingInterval: 1000,
    maxHeaderSize: l.maxHeaderBytes,
  };
}

export interface ConnectionGuard {
  /** this connection has shown it may talk: it no longer counts as waiting */
  authenticated(sock: net.Socket): void;
  readonly stats: { refused: number; evicted: number };
}

/**
 * Apply the connection caps to `server`; hits are reported under `name` (e.g. "api.tcp").
 * `uidOf` (unix sockets): the connecting user, trusted when it is the owner or root, and on a
 * `shared` socket (other users allowed) counted against the per-user cap.
 */
export function guardConnections(server: http.Server, l: ApiListenerLimits, name: string, limits: LimitReporter, uidOf?: (sock: net.Socket) => number | null, shared = false): ConnectionGuard {
  server.maxConnections = l.maxConnections;
  const waiting = new Set<net.Socket>(); // insertion order: oldest first
  const stats = { refused: 0, evicted: 0 };
  const perUser = new Map<number, number>();
  const authed = new WeakSet<net.Socket>();
  const me = process.getuid?.() ?? -1;
  server.on('drop', () => {
    stats.refused++;
    limits.hit(`${name}.connections`, l.maxConnections, name, 'the API has as many connections as it takes; new ones are closed at once until some end');
  });
  server.on('connection', (sock: net.Socket) => {
    const uid = uidOf ? uidOf(sock) : null;
    // until its first request an idle socket times out (the http server destroys it then): soon
    // for anyone who might hoard connections, late for the owner and root, who are trusted from
    // the start and whose client may just be slow to be scheduled (a loaded machine, a TCG guest)
    const trusted = uid !== null && (uid === me || uid === 0);
    sock.setTimeout(trusted ? l.requestTimeoutMs : l.firstRequestMs);
    if (trusted) return;
    if (uid !== null && shared && l.maxPerUser > 0) {
      const n = perUser.get(uid) ?? 0;
      if (n >= l.maxPerUser) {
        stats.refused++;
        limits.hit(`${name}.connectionsPerUser`, l.maxPerUser, `uid ${uid}`, 'one user holds as many API connections as a user may; new ones are closed at once until some end');
        sock.destroy();
        return;
      }
      perUser.set(uid, n + 1);
      sock.once('close', () => { const m = (perUser.get(uid) ?? 1) - 1; if (m <= 0) perUser.delete(uid); else perUser.set(uid, m); });
    }
    waiting.add(sock);
    sock.once('close', () => waiting.delete(sock));
    if (waiting.size <= l.maxUnauthenticated) return;
    const oldest = waiting.values().next().value!;
    waiting.delete(oldest);
    stats.evicted++;
    limits.hit(`${name}.unauthenticated`, l.maxUnauthenticated, name, 'many connections opened the API without sending an (authenticated) request; the oldest waiting one was closed');
    oldest.destroy();
  });
  return {
    authenticated: (sock) => {
      if (authed.has(sock)) return;
      authed.add(sock);
      waiting.delete(sock);
      sock.setTimeout(0); // from now on Node's request and keep-alive timeouts apply
    },
    stats,
  };
}
