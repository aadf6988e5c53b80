// Helper processes for bench/user.ts, run inside the benchmark's network namespace.
//
//   user-peer.ts server SECONDS      the "host" side: loopback servers on 127.0.0.1 and ::1
//                                     (what 10.0.2.2 and fec0::2 reach through qnet or slirp)
//   user-peer.ts client MODE ARGS...  the guest-side load generator (connects to 10.0.2.2, or
//                                     to BENCH_TARGET, e.g. fec0::2)
//
// Every client mode prints one JSON line on stdout with its result.
import net from 'node:net';
import readline from 'node:readline';

export const PORTS = { sink: 5001, source: 5002, echo: 5003, close: 5004, hold: 5005 } as const;
const HOST = process.env.BENCH_TARGET ?? '10.0.2.2';
const CHUNK = Buffer.alloc(256 * 1024, 0x5a);

function out(v: unknown): void {
  process.stdout.write(JSON.stringify(v) + '\n');
}

// ---------------------------------------------------------------------------- servers

function listen(port: number, onConn: (s: net.Socket) => void): Promise<void> {
  const one = (host: string): Promise<void> => {
    const srv = net.createServer({ noDelay: true }, (s) => {
      s.on('error', () => {});
      onConn(s);
    });
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host, port, backlog: 4096 }, () => resolve());
    });
  };
  // IPv6 loopback only where the namespace has IPv6 (the IPv4-only cases disable it)
  return Promise.all([one('127.0.0.1'), process.env.BENCH_V6 ? one('::1') : Promise.resolve()]).then(() => undefined);
}

/** Write CHUNKs as fast as the socket takes them for `seconds`, then end. */
function blast(s: net.Socket, seconds: number, onDone?: (bytes: number) => void): void {
  const deadline = performance.now() + seconds * 1000;
  let bytes = 0;
  let done = false;
  const pump = (): void => {
    while (!done) {
      if (performance.now() >= deadline) {
        done = true;
        s.end();
        onDone?.(bytes);
        return;
      }
      bytes += CHUNK.length;
      if (!s.write(CHUNK)) return; // resumes on 'drain'
    }
  };
  s.on('drain', pump);
  s.on('close', () => { done = true; });
  pump();
}

async function server(seconds: number): Promise<void> {
  // sink: count what arrives; at the client's FIN report bytes and the receiver's own timing.
  await listen(PORTS.sink, (s) => {
    let bytes = 0;
    let t0 = 0;
    s.on('data', (d: Buffer) => {
      if (bytes === 0) t0 = performance.now();
      bytes += d.length;
    });
    s.on('end', () => s.end(JSON.stringify({ bytes, seconds: (performance.now() - t0) / 1000 }) + '\n'));
  });
  // source: send for `seconds`, then FIN.
  await listen(PORTS.source, (s) => {
    s.resume();
    blast(s, seconds);
  });
  // echo: request/response.
  await listen(PORTS.echo, (s) => {
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
  });
  // close: one byte, then FIN (one connection = SYN .. data .. FIN both ways).
  await listen(PORTS.close, (s) => {
    s.resume();
    s.end('x');
  });
  // hold: one byte so the guest knows the connection reached the host, then stay idle.
  await listen(PORTS.hold, (s) => {
    s.resume();
    s.write('h');
    s.on('end', () => s.end());
  });
  out({ ready: true });
}

// ---------------------------------------------------------------------------- clients

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: HOST, port, noDelay: true });
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

/** Retry until the relay answers (QEMU/qnet/slirp starting up, ARP). */
async function waitUp(timeoutS: number): Promise<void> {
  const deadline = performance.now() + timeoutS * 1000;
  for (;;) {
    try {
      const s = await connect(PORTS.close);
      await new Promise<void>((resolve) => { s.resume(); s.once('close', () => resolve()); });
      out({ up: true });
      return;
    } catch (e) {
      if (performance.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** guest -> host: send for `seconds`, then FIN; the sink reports what it received and over how long. */
async function up(seconds: number): Promise<void> {
  const s = await connect(PORTS.sink);
  let reply = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => { reply += d; });
  const t0 = performance.now();
  let sent = 0;
  blast(s, seconds, (b) => { sent = b; });
  await new Promise<void>((resolve, reject) => { s.once('end', () => resolve()); s.once('error', reject); });
  const elapsed = (performance.now() - t0) / 1000;
  const r = JSON.parse(reply) as { bytes: number; seconds: number };
  if (r.bytes !== sent) throw new Error(`sink got ${r.bytes} bytes, sent ${sent}`);
  out({ bytes: r.bytes, seconds: elapsed, gbps: (r.bytes * 8) / elapsed / 1e9 });
}

/** host -> guest: the source sends for its configured time; count until its FIN. */
async function down(): Promise<void> {
  const t0 = performance.now();
  const s = await connect(PORTS.source);
  let bytes = 0;
  s.on('data', (d: Buffer) => { bytes += d.length; });
  await new Promise<void>((resolve, reject) => { s.once('end', () => resolve()); s.once('error', reject); });
  const elapsed = (performance.now() - t0) / 1000;
  s.destroy();
  out({ bytes, seconds: elapsed, gbps: (bytes * 8) / elapsed / 1e9 });
}

/** Connections per second: `conc` loops of connect, receive 1 byte + FIN, close. */
async function conns(seconds: number, conc: number): Promise<void> {
  const deadline = performance.now() + seconds * 1000;
  const t0 = performance.now();
  let ok = 0;
  let failed = 0;
  const errors: Record<string, number> = {};
  const lat: number[] = [];
  const one = (): Promise<void> => new Promise((resolve) => {
    const t = performance.now();
    const s = net.connect({ host: HOST, port: PORTS.close });
    let got = 0;
    s.on('data', (d: Buffer) => { got += d.length; });
    s.on('end', () => s.end());
    let err = '';
    s.on('error', (e: NodeJS.ErrnoException) => { err = e.code ?? e.message; });
    s.on('close', (hadError) => {
      if (!hadError && got === 1) { ok++; lat.push(performance.now() - t); } else {
        failed++;
        const k = err || `got ${got} bytes`;
        errors[k] = (errors[k] ?? 0) + 1;
      }
      resolve();
    });
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
  });
  const loop = async (): Promise<void> => { while (performance.now() < deadline) await one(); };
  await Promise.all(Array.from({ length: conc }, loop));
  const elapsed = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  out({ ok, failed, errors, seconds: elapsed, perSecond: ok / elapsed, p50ms: lat[Math.floor(lat.length / 2)] ?? null });
}

/** Request/response: 1-byte ping-pong over one connection. */
async function rr(seconds: number): Promise<void> {
  const s = await connect(PORTS.echo);
  const one = Buffer.from('p');
  let n = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await new Promise<void>((resolve, reject) => {
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      n += d.length;
      if (performance.now() >= deadline) { resolve(); return; }
      s.write(one);
    });
    s.write(one);
  });
  const elapsed = (performance.now() - t0) / 1000;
  s.destroy();
  out({ roundTrips: n, seconds: elapsed, perSecond: n / elapsed, usPerRoundTrip: (elapsed * 1e6) / n });
}

/** Open `count` connections (each confirmed by the host's byte), report, hold until stdin says "close". */
async function hold(count: number): Promise<void> {
  const socks: net.Socket[] = [];
  let next = 0;
  const openOne = async (): Promise<void> => {
    while (next < count) {
      next++;
      const s = await connect(PORTS.hold);
      await new Promise<void>((resolve) => s.once('data', () => resolve()));
      s.on('error', () => {});
      socks.push(s);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 32 }, openOne));
  out({ held: socks.length, seconds: (performance.now() - t0) / 1000 });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) if (line.trim() === 'close') break;
  for (const s of socks) s.destroy();
  out({ closed: socks.length });
  rl.close();
}

async function main(argv: string[]): Promise<void> {
  const [role, mode, ...rest] = argv;
  if (role === 'server') return server(Number(mode ?? 4));
  if (role !== 'client') throw new Error('usage: user-peer.ts server SECONDS | client MODE ARGS...');
  const n = (i: number, d: number): number => (rest[i] === undefined ? d : Number(rest[i]));
  switch (mode) {
    case 'wait': return waitUp(n(0, 15));
    case 'up': return up(n(0, 4));
    case 'down': return down();
    case 'conns': return conns(n(0, 3), n(1, 8));
    case 'rr': return rr(n(0, 3));
    case 'hold': return hold(n(0, 1000));
    default: throw new Error(`unknown client mode ${mode}`);
  }
}

main(process.argv.slice(2)).then(
  () => { if (process.argv[2] === 'client') process.exit(0); },
  (e: unknown) => {
    process.stderr.write(`user-peer: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(1);
  },
);
