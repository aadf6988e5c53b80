// Shared pieces of the `qnet user` end-to-end tests (e2e-user*.test.ts, e2e-slirp-compare.test.ts):
// a `qnet user` child process, loopback DNS / HTTP / echo services, and a stand-alone
// services script for running the same services inside a test network namespace.
//
// Safety: every DNS server here answers from a fixed table and never forwards anything;
// every listener binds an explicit (loopback or test-namespace) address.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.ts';
import { waitFor } from './wait.ts';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** QEMU arguments for a virtio NIC on a qnet stream socket. */
export function streamNic(sock: string, mac: string, id = 'n0'): string[] {
  return ['-netdev', `stream,id=${id},server=off,addr.type=unix,addr.path=${sock}`, '-device', `virtio-net-pci,netdev=${id},mac=${mac}`];
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freeTcpPort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A UDP port that was free a moment ago on 127.0.0.1. */
export async function freeUdpPort(host = '127.0.0.1'): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, host, () => r()));
  const port = s.address().port;
  s.close();
  return port;
}

// ---------------------------------------------------------------------------------------------
// `qnet user` as a child process

export class QnetUser {
  stdout = '';
  stderr = '';
  exitCode: number | null | undefined = undefined;
  readonly exited: Promise<number | null>;
  private constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => (this.stdout += d));
    child.stderr!.on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((r) => child.on('exit', (code) => { this.exitCode = code; r(code); }));
  }
  get pid(): number { return this.child.pid!; }

  /**
   * `node bin/qnet.js user OPTS --listen unix:SOCK`, inside `ns` when given (ns.spawn: the pid
   * is node's own, since `ip netns exec` and setpriv exec). Resolves once qnet printed its
   * attach hint, i.e. the socket is listening.
   */
  static async start(opts: string, sock: string, ns?: Netns, extra: string[] = [], o: { prefix?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<QnetUser> {
    const argv = [...(o.prefix ?? []), process.execPath, join(repoRoot, 'bin', 'qnet.js'), 'user', opts, '--listen', `unix:${sock}`, ...extra];
    const env = { ...process.env, ...o.env };
    const child = ns ? ns.spawn(argv, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(argv[0], argv.slice(1), { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const q = new QnetUser(child);
    try {
      await waitFor(() => q.stdout.includes('attach QEMU with'), {
        what: 'qnet user to listen', timeoutMs: 30_000, diag: () => q.stderr + q.stdout,
        abort: () => q.exitCode !== undefined && `qnet user exited (${q.exitCode})`,
      });
    } catch (e) {
      q.kill();
      throw e;
    }
    return q;
  }

  /** SIGUSR1 → the JSON counters line. */
  async stats(ms = 10_000): Promise<Record<string, any>> {
    const lines = (): string[] => this.stdout.split('\n').filter((l) => l.startsWith('{'));
    const n = lines().length;
    process.kill(this.pid, 'SIGUSR1');
    const line = await waitFor(() => { const l = lines(); return l.length > n && this.stdout.endsWith('\n') && l[n]; }, {
      what: 'the SIGUSR1 counters', timeoutMs: ms, diag: () => this.stderr,
      abort: () => this.exitCode !== undefined && `qnet user exited (${this.exitCode})`,
    });
    return JSON.parse(line) as Record<string, any>;
  }

  /** SIGTERM, then SIGKILL if it lingers; resolves with the exit code. */
  async stop(ms = 5000): Promise<number | null> {
    if (this.exitCode !== undefined) return this.exitCode;
    try { process.kill(this.pid, 'SIGTERM'); } catch { /* gone */ }
    const t = setTimeout(() => this.kill(), ms);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  kill(): void {
    if (this.exitCode !== undefined) return;
    try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}

// ---------------------------------------------------------------------------------------------
// A tiny authoritative-only DNS server (UDP): A and AAAA records from a table, NXDOMAIN otherwise.

/**
 * Build a DNS response to `q` (a query) from a name → address table (IPv4 for A, IPv6 for
 * AAAA; several separated by '|'). null for junk.
 */
export function dnsAnswer(q: Buffer, table: Record<string, string>): Buffer | null {
  if (q.length < 12 || (q[2] & 0x80) !== 0 || q.readUInt16BE(4) !== 1) return null;
  let o = 12;
  const labels: string[] = [];
  while (o < q.length && q[o] !== 0) {
    const n = q[o];
    if (n > 63 || o + 1 + n > q.length) return null;
    labels.push(q.subarray(o + 1, o + 1 + n).toString('latin1'));
    o += 1 + n;
  }
  if (o + 5 > q.length) return null;
  const qEnd = o + 5;
  const qtype = q.readUInt16BE(o + 1);
  const name = labels.join('.').toLowerCase();
  const addr = table[name];
  const question = q.subarray(12, qEnd);
  const hdr = Buffer.alloc(12);
  q.copy(hdr, 0, 0, 2);
  const found = addr !== undefined;
  const matching = found ? addr.split('|').filter((a) => (qtype === 1 && !a.includes(':')) || (qtype === 28 && a.includes(':'))) : [];
  hdr.writeUInt16BE(0x8400 | (q.readUInt16BE(2) & 0x0100) | (found ? 0 : 3), 2); // QR AA (RD copied), NOERROR/NXDOMAIN
  hdr.writeUInt16BE(1, 4);
  hdr.writeUInt16BE(matching.length, 6);
  const parts = [hdr, question];
  for (const a of matching) {
    const v6 = a.includes(':');
    const rr = Buffer.alloc(v6 ? 28 : 16);
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(v6 ? 28 : 1, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(60, 6);
    rr.writeUInt16BE(v6 ? 16 : 4, 10);
    if (v6) {
      // expand '::' (test tables hold plain addresses) into eight groups
      const [l, r = ''] = a.split('::');
      const left = l ? l.split(':') : [];
      const right = a.includes('::') ? (r ? r.split(':') : []) : [];
      const groups = a.includes('::') ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right] : left;
      groups.forEach((g, i) => rr.writeUInt16BE(parseInt(g, 16), 12 + 2 * i));
    } else {
      a.split('.').forEach((b, i) => (rr[12 + i] = Number(b)));
    }
    parts.push(rr);
  }
  return Buffer.concat(parts);
}

export interface TestDns { port: number; queries: string[]; close(): void }

/** The DNS server on 127.0.0.1 (random port), in this process. */
export async function startDns(table: Record<string, string>, port = 0): Promise<TestDns> {
  const s = dgram.createSocket('udp4');
  const queries: string[] = [];
  s.on('message', (msg, rinfo) => {
    const r = dnsAnswer(msg, table);
    // record the question name for the test's assertions
    let o = 12; const l: string[] = [];
    while (o < msg.length && msg[o] !== 0 && msg[o] < 64) { l.push(msg.subarray(o + 1, o + 1 + msg[o]).toString('latin1')); o += 1 + msg[o]; }
    queries.push(l.join('.'));
    if (r) s.send(r, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => s.bind(port, '127.0.0.1', () => r()));
  return { port: s.address().port, queries, close: () => s.close() };
}

/** An HTTP server on 127.0.0.1 answering every GET with `body` (and counting requests). */
export async function startHttp(body: string): Promise<{ port: number; requests: string[]; close(): void }> {
  const requests: string[] = [];
  const srv = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`${body}\n`);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return { port: (srv.address() as net.AddressInfo).port, requests, close: () => { srv.closeAllConnections(); srv.close(); } };
}

/** A TCP service on 127.0.0.1: greets with `prefix`, echoes each chunk back prefixed, closes after the first. */
export async function startTcpEcho(prefix: string): Promise<{ port: number; conns: number; close(): void }> {
  const st = { port: 0, conns: 0, close: () => {} };
  const srv = net.createServer((c) => {
    st.conns++;
    c.on('error', () => {});
    c.once('data', (d) => c.end(`${prefix} ${d.toString().trim()}\n`));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  st.port = (srv.address() as net.AddressInfo).port;
  st.close = () => srv.close();
  return st;
}

/** A UDP echo service on 127.0.0.1. */
export async function startUdpEcho(): Promise<{ port: number; datagrams: number; close(): void }> {
  const s = dgram.createSocket('udp4');
  const st = { port: 0, datagrams: 0, close: () => s.close() };
  s.on('message', (m, r) => { st.datagrams++; s.send(m, r.port, r.address); });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  st.port = s.address().port;
  return st;
}

// ---------------------------------------------------------------------------------------------
// The same services as a stand-alone node script, for namespaces (node -e can't be used with
// ns.spawn's argv quoting-free interface as conveniently, so the script goes to a file).

export interface ServicesSpec {
  /** DNS: address(es), port, table; a table value 'SOURCE' answers with the querier's own address */
  dns?: { addr: string | string[]; port: number; table: Record<string, string> };
  /** HTTP: every GET answers body (on each address given) */
  http?: { addr: string | string[]; port: number; body: string };
  /** TCP: replies `${prefix} from=<peer address> <first chunk>` and closes */
  tcp?: { addr: string; port: number; prefix: string };
  /** UDP echo */
  udp?: { addr: string; port: number };
}

const servicesScript = `
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
const spec = JSON.parse(process.argv[2]);
// (tsx/esbuild hands us the transpiled JavaScript of dnsAnswer, so it can be inlined)
const dnsAnswer = ${dnsAnswer.toString()};
let pending = 0;
const ready = () => { if (--pending === 0) console.log('services ready'); };
if (spec.dns) {
  pending++;
  for (const addr of [].concat(spec.dns.addr)) {
    pending++;
    const s = dgram.createSocket(addr.includes(':') ? 'udp6' : 'udp4');
    s.on('message', (m, r) => {
      const t = Object.fromEntries(Object.entries(spec.dns.table).map(([k, v]) => [k, v === 'SOURCE' ? r.address : v]));
      const a = dnsAnswer(m, t);
      if (a) s.send(a, r.port, r.address);
    });
    s.bind(spec.dns.port, addr, ready);
  }
  pending--;
}
if (spec.http) {
  for (const addr of [].concat(spec.http.addr)) {
    pending++;
    http.createServer((q, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(spec.http.body + '\\n'); }).listen(spec.http.port, addr, ready);
  }
}
if (spec.tcp) {
  pending++;
  net.createServer((c) => { c.on('error', () => {}); c.once('data', (d) => c.end(spec.tcp.prefix + ' from=' + c.remoteAddress + ' ' + d.toString().trim() + '\\n')); }).listen(spec.tcp.port, spec.tcp.addr, ready);
}
if (spec.udp) {
  pending++;
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(m, r.port, r.address));
  u.bind(spec.udp.port, spec.udp.addr, ready);
}
`;

/** Start the services inside `ns`; resolves once all are bound. */
export async function startServicesIn(ns: Netns, dir: string, spec: ServicesSpec): Promise<ChildProcess> {
  const file = join(dir, `services-${ns.name}.mjs`);
  writeFileSync(file, servicesScript);
  const child = ns.spawn([process.execPath, file, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => (out += d));
  child.stderr!.on('data', (d: string) => (out += d));
  await waitFor(() => out.includes('services ready'), {
    what: `the services in ${ns.name}`, timeoutMs: 30_000, diag: () => out,
    abort: () => child.exitCode !== null && `services in ${ns.name} exited (${child.exitCode})`,
  });
  return child;
}

/**
 * Shell functions for guest scripts: now (ms uptime), oneline, pingt NAME IP -> `QNET ping-NAME rc
 * received` (three pings; -W 5 waits that long for the last reply, a hang guard for busy machines).
 */
export const GUEST_SH_LIB = `now() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
oneline() { tr '\\n' ' ' | tr -s ' '; }
pingt() {
  out=$(ping -c 3 -W 5 $2 2>&1); rc=$?
  rx=$(echo "$out" | sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p')
  echo "QNET ping-$1 $rc \${rx:-0}"
}
`;
