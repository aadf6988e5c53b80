// Soak benchmark (issue 13): one guest floods qnet (SYN, UDP, DHCP, DNS) while another moves
// bulk TCP and the control API is polled. Reports, without and with the flood: the good
// guest's throughput, the API's latency (GET /v1/status over the unix socket, and the wall
// time of `qnet status`), and the daemon's RSS and descriptor count; plus the daemon's limit
// counters after the flood.
//
// Layout (needs root; touches nothing outside the namespaces it creates):
//   namespace D: `qnet up` (one NAT network, 10.88.0.0/24), the "host" servers on 127.0.0.1
//                (bench/user-peer.ts), a DNS responder on 127.0.0.1:5353 (qnet's upstream),
//                and a tap nobody reads that 198.51.100.0/24 and 203.0.113.0/24 are routed to, so
//                the flood's NAT connections hang (SYN_SENT) and its UDP flows stay open, as
//                they would toward an unreachable internet, while nothing leaves the machine.
//   namespace G: the good guest: a tap (10.88.0.50/24, default via 10.88.0.1) relayed by a
//                QEMU with no machine (-M none, a hub) to qnet's attach socket.
//   the flood:   bench/soak-flood.ts, raw frames on the same attach socket (its own port).
//
// Environment:
//   SOAK_SECONDS=5        length of each bulk transfer (and of each measurement window)
//   SOAK_FLOOD=syn,udp,dhcp,dns   what the hostile guest sends
//   SOAK_SPOOF=1          the flood's SYN/UDP come from random source addresses (0: its own)
//   SOAK_WARMUP=5         seconds of flood before the flooded measurement starts
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetns, tap, type Netns } from '../test/helpers/netns.ts';
import { ApiClient } from '../src/daemon/client.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PEER = path.join(root, 'bench', 'user-peer.ts');
const FLOOD = path.join(root, 'bench', 'soak-flood.ts');
const QNET = path.join(root, 'bin', 'qnet.js');
const SECONDS = Number(process.env.SOAK_SECONDS ?? 5);
const WARMUP = Number(process.env.SOAK_WARMUP ?? 5);
const KINDS = process.env.SOAK_FLOOD ?? 'syn,udp,dhcp,dns';
const QEMU = process.env.QEMU ?? 'qemu-system-x86_64';

const log = (m: string): void => { process.stderr.write(`[bench:soak] ${m}\n`); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const DNS_RESPONDER = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp4');
s.on('message', (m, r) => {
  if (m.length < 12) return;
  const a = Buffer.from(m); a[2] = 0x81; a[3] = 0x80; a.writeUInt16BE(0, 6); // NOERROR, no answers
  s.send(a, r.port, r.address);
});
s.bind(5353, '127.0.0.1', () => console.log('ready'));
`;

function waitLine(child: ChildProcess, stream: 'stdout' | 'stderr', re: RegExp, ms: number, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${what}: nothing matching ${re} within ${ms} ms:\n${buf.slice(-2000)}`)), ms);
    const on = (d: Buffer): void => {
      buf += d;
      const m = buf.split('\n').find((l) => re.test(l));
      if (m) { clearTimeout(t); child[stream]!.off('data', on); resolve(m); }
    };
    child[stream]!.on('data', on);
    child.once('exit', (code) => { clearTimeout(t); reject(new Error(`${what}: exited (${code}):\n${buf.slice(-2000)}`)); });
  });
}

function nodeArgs(script: string, ...args: string[]): string[] { return [process.execPath, '--import', 'tsx', script, ...args]; }

async function guestClient(ns: Netns, args: string[], timeoutMs = 120_000): Promise<{ gbps: number; bytes: number; seconds: number }> {
  const child = ns.spawn(nodeArgs(PEER, 'client', ...args), { cwd: root, env: { ...process.env, BENCH_TARGET: '10.88.0.1' } });
  let out = '', err = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { err += d; });
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  clearTimeout(t);
  if (code !== 0) throw new Error(`guest client ${args.join(' ')} failed (${code}): ${err.trim()}`);
  return JSON.parse(out.trim().split('\n').pop()!);
}

function procStats(pid: number): { rssMiB: number; fds: number } {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { rssMiB: m ? Number(m[1]) / 1024 : NaN, fds: fs.readdirSync(`/proc/${pid}/fd`).length };
}

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

interface Window { gbps: number; api: { n: number; failed: number; p50ms: number; p95ms: number; maxMs: number; errors: string[] }; cli: { runs: number; failed: number; medianMs: number }; rssMaxMiB: number; fdsMax: number }

/** One measurement window: a bulk transfer while the API is polled and the daemon sampled. */
async function window(nsG: Netns, api: ApiClient, pid: number, apiSock: string): Promise<Window> {
  const lat: number[] = [];
  const errors: string[] = [];
  let failed = 0, rssMax = 0, fdsMax = 0;
  let running = true;
  const poll = (async () => {
    while (running) {
      const t0 = performance.now();
      try { await api.get('/v1/status'); lat.push(performance.now() - t0); } catch (e) { failed++; if (errors.length < 3) errors.push((e as Error).message); }
      try { const s = procStats(pid); rssMax = Math.max(rssMax, s.rssMiB); fdsMax = Math.max(fdsMax, s.fds); } catch { /* gone */ }
      await sleep(100);
    }
  })();
  const cli = (async () => {
    const times: number[] = [];
    let bad = 0;
    while (running) {
      const t0 = performance.now();
      const code = await new Promise<number | null>((r) => spawn(process.execPath, [QNET, 'status', '--api', apiSock], { stdio: 'ignore' }).once('exit', r));
      if (code === 0) times.push(performance.now() - t0); else bad++;
      await sleep(1000); // a CLI run costs a node start-up (~1 s of CPU): once a second, not back to back
    }
    return { runs: times.length + bad, failed: bad, medianMs: pct(times, 50) };
  })();
  let bulk = { gbps: NaN };
  try { bulk = await guestClient(nsG, ['up', String(SECONDS)]); } catch (e) { log(`bulk transfer failed: ${(e as Error).message}`); }
  running = false;
  await poll;
  const c = await cli;
  return {
    gbps: bulk.gbps, cli: c, rssMaxMiB: rssMax, fdsMax,
    api: { n: lat.length, failed, p50ms: pct(lat, 50), p95ms: pct(lat, 95), maxMs: Math.max(...lat, 0), errors },
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:soak needs root (network namespaces, tap)');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qnet-soak-'));
  fs.chmodSync(tmp, 0o700);
  const rt = path.join(tmp, 'rt'), state = path.join(tmp, 'state');
  const nsD = await createNetns();
  const nsG = await createNetns();
  const children: ChildProcess[] = [];
  try {
    // namespace D: the dummy "internet", the host servers, the DNS upstream, qnet
    // a tap no process has open: admin up, no carrier, everything routed to it is dropped
    await nsD.ip('tuntap', 'add', 'dev', 'soak0', 'mode', 'tap');
    await nsD.ip('link', 'set', 'soak0', 'up');
    await nsD.ip('addr', 'add', '192.0.2.1/24', 'dev', 'soak0');
    await nsD.ip('route', 'add', '198.51.100.0/24', 'dev', 'soak0');
    await nsD.ip('route', 'add', '203.0.113.0/24', 'dev', 'soak0');
    const servers = nsD.spawn(nodeArgs(PEER, 'server', String(SECONDS)), { cwd: root });
    children.push(servers);
    await waitLine(servers, 'stdout', /"ready"/, 20_000, 'host servers');
    const dns = nsD.spawn([process.execPath, '-e', DNS_RESPONDER]);
    children.push(dns);
    await waitLine(dns, 'stdout', /ready/, 10_000, 'DNS responder');
    const config = path.join(tmp, 'qnet.yaml');
    fs.writeFileSync(config, `networks:\n  - name: soak\n    mode: nat\n    subnet: 10.88.0.0/24\n    gateway: 10.88.0.1\n    dhcp: 10.88.0.100-10.88.0.199\n    upstreams: [127.0.0.1:5353]\n    attach: unix:${path.join(rt, 'soak.sock')}\n`);
    const qnet = nsD.spawn([process.execPath, QNET, 'up', '-c', config, '--runtime-dir', rt, '--state-dir', state], { cwd: root });
    children.push(qnet);
    let qnetErr = '';
    qnet.stderr!.on('data', (d) => { qnetErr += d; if (qnetErr.length > 1 << 20) qnetErr = qnetErr.slice(-(1 << 19)); });
    await waitLine(qnet, 'stdout', /control API on/, 30_000, 'qnet up');
    const budget = /descriptor budget.*/.exec(qnetErr)?.[0];
    log(budget ?? 'qnet logged no descriptor budget');
    const apiSock = path.join(rt, 'api.sock');
    const api = new ApiClient(apiSock, { timeoutMs: 10_000 });
    const pid = (await api.get<{ pid: number }>('/v1/status')).pid;

    // namespace G: the good guest
    await nsG.sysctl('net.ipv6.conf.all.disable_ipv6', '1');
    const dev = await tap(nsG, { addr: '10.88.0.50/24' });
    await nsG.addRoute('default', { via: '10.88.0.1' });
    const qemu = nsG.spawn([QEMU, '-M', 'none', '-nodefaults', '-display', 'none',
      '-netdev', `tap,id=t0,ifname=${dev},script=no,downscript=no`, '-netdev', 'hubport,id=h0,hubid=0,netdev=t0',
      '-netdev', `stream,id=s0,server=off,addr.type=unix,addr.path=${path.join(rt, 'soak.sock')}`, '-netdev', 'hubport,id=h1,hubid=0,netdev=s0']);
    children.push(qemu);
    await guestClient(nsG, ['wait', '30']);
    const idle = procStats(pid);
    log(`daemon idle: ${idle.rssMiB.toFixed(0)} MiB RSS, ${idle.fds} descriptors`);

    log(`without flood: bulk guest->host for ${SECONDS} s, API polled`);
    const calm = await window(nsG, api, pid, apiSock);

    log(`flood (${KINDS}${process.env.SOAK_SPOOF === '0' ? '' : ', spoofed sources'}) for ${WARMUP} s, then the same measurement`);
    const flood = spawn(process.execPath, nodeArgs(FLOOD, path.join(rt, 'soak.sock'), '10.88.0.1', '10.88.0.66', KINDS).slice(1), { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(flood);
    let floodOut = '';
    flood.stdout!.on('data', (d) => { floodOut += d; });
    flood.stderr!.on('data', (d) => log(`flood: ${String(d).trim()}`));
    await sleep(WARMUP * 1000);
    const stormy = await window(nsG, api, pid, apiSock);
    const sent = JSON.parse(floodOut.trim().split('\n').pop() ?? '{"sent":{}}').sent as Record<string, number>;
    flood.kill('SIGKILL');
    let metrics = '';
    try { metrics = await api.get<string>('/metrics'); } catch (e) { log(`metrics: ${(e as Error).message}`); }
    const pick = (re: RegExp): string[] => metrics.split('\n').filter((l) => re.test(l));
    const after = procStats(pid);

    const result = {
      seconds: SECONDS, flood: KINDS, spoofed: process.env.SOAK_SPOOF !== '0', budget, idle, calm, flooded: stormy, floodFramesSent: sent, afterFlood: after,
      counters: pick(/^qnet_(limit_hits_total|tcp_connections|udp_flows|leases|open_fds|fd_budget|dns_queries_total)/),
    };
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    const row = (k: string, a: string, b: string): string => `| ${k} | ${a} | ${b} |`;
    const f = (x: number, d = 2): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
    process.stdout.write([
      '', '| soak | without flood | with flood |', '|---|---|---|',
      row('good guest TCP guest->host (Gbit/s)', f(calm.gbps), f(stormy.gbps)),
      row('GET /v1/status p50 / p95 / max (ms)', `${f(calm.api.p50ms, 1)} / ${f(calm.api.p95ms, 1)} / ${f(calm.api.maxMs, 1)}`, `${f(stormy.api.p50ms, 1)} / ${f(stormy.api.p95ms, 1)} / ${f(stormy.api.maxMs, 1)}`),
      row('GET /v1/status answered / failed', `${calm.api.n} / ${calm.api.failed}`, `${stormy.api.n} / ${stormy.api.failed}`),
      row('`qnet status` median wall time (ms), runs / failed', `${f(calm.cli.medianMs, 0)}, ${calm.cli.runs} / ${calm.cli.failed}`, `${f(stormy.cli.medianMs, 0)}, ${stormy.cli.runs} / ${stormy.cli.failed}`),
      row('daemon RSS max (MiB)', f(calm.rssMaxMiB, 0), f(stormy.rssMaxMiB, 0)),
      row('daemon descriptors max', String(calm.fdsMax), String(stormy.fdsMax)),
      '', `flood frames sent: ${JSON.stringify(sent)}`, '',
    ].join('\n'));
  } finally {
    for (const c of children.reverse()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await nsG.delete();
    await nsD.delete();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:soak: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
