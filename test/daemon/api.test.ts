// The control API (src/daemon/api.ts) and its client, over real sockets, against a small fake
// DaemonControl: the API layer is what is tested here, the daemon is tested elsewhere.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { startApi, type ApiServer } from '../../src/daemon/api.ts';
import { ApiClient, ApiError, DaemonUnreachableError, resolveApiAddress } from '../../src/daemon/client.ts';
import { defaultRuntimeDir, defaultStateDir } from '../../src/common/paths.ts';
import type { AttachResult, DaemonControl, ForwardInfo, LeaseInfo, NetworkInfo, StatusInfo, VmRecord } from '../../src/daemon/types.ts';
import { FakeControl } from './fake-control.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/wait.ts';

const tmp = makeTempDir('api-');
const servers: ApiServer[] = [];
after(async () => { for (const s of servers) await s.close(); });

let serial = 0;
async function start(control: DaemonControl, opts: Partial<Parameters<typeof startApi>[1]> = {}, sub = `run${++serial}/qnet`): Promise<ApiServer> {
  const s = await startApi(control, { socketPath: path.join(tmp.path, sub, 'api.sock'), ...opts });
  servers.push(s);
  return s;
}

/** raw request over the unix socket or TCP, for status codes and headers */
function raw(target: { socketPath: string } | { port: number }, method: string, p: string, body?: string | Buffer, headers: http.OutgoingHttpHeaders = {}):
  Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string; json: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...('port' in target ? { host: '127.0.0.1', port: target.port } : target), method, path: p, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json: any;
        try { json = JSON.parse(text); } catch { /* text */ }
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('paths: runtime and state directories', () => {
  assert.equal(defaultRuntimeDir({ XDG_RUNTIME_DIR: '/run/user/1000' }), '/run/user/1000/qnet');
  const expectRuntime = process.getuid!() === 0 ? '/run/qnet' : `/tmp/qnet-${process.getuid!()}`;
  assert.equal(defaultRuntimeDir({}), expectRuntime);
  if (process.getuid!() === 0) assert.equal(defaultStateDir({}), '/var/lib/qnet');
  else assert.equal(defaultStateDir({ XDG_STATE_HOME: '/x/state' }), '/x/state/qnet');
  assert.equal(resolveApiAddress('/a.sock', { QNET_API: '/b.sock' }), '/a.sock');
  assert.equal(resolveApiAddress(undefined, { QNET_API: '/b.sock' }), '/b.sock');
  assert.equal(resolveApiAddress(undefined, { XDG_RUNTIME_DIR: '/r' }), '/r/qnet/api.sock');
});

test('read routes: status, networks, network, leases, ports, forwards, metrics', async () => {
  const fake = new FakeControl();
  const s = await start(fake);
  const c = new ApiClient(s.socketPath);
  const st = await c.get<StatusInfo>('/v1/status');
  assert.equal(st.version, '0.1.0');
  assert.deepEqual(st.networks.map((n) => n.name), ['default', 'lab']);
  assert.equal((await c.get<NetworkInfo[]>('/v1/networks')).length, 2);
  assert.equal((await c.get<NetworkInfo>('/v1/networks/lab')).mode, 'isolated');
  assert.equal((await c.get<LeaseInfo[]>('/v1/networks/default/leases')).length, 2);
  assert.equal((await c.get<(LeaseInfo & { network: string })[]>('/v1/leases'))[0].network, 'default');
  assert.equal((await c.get<{ vm: string }[]>('/v1/networks/default/ports'))[0].vm, 'vm1');
  assert.equal((await c.get<ForwardInfo[]>('/v1/networks/default/forwards'))[0].id, 'tcp:127.0.0.1:2222');
  assert.equal((await c.get<ForwardInfo[]>('/v1/forwards')).length, 1);
  const m = await raw({ socketPath: s.socketPath }, 'GET', '/metrics');
  assert.equal(m.status, 200);
  assert.match(m.headers['content-type']!, /^text\/plain; version=0\.0\.4/);
  assert.match(m.text, /^qnet_frames_total\{network="default"\} 22$/m);
});

test('errors: 404 for a missing network, unknown routes list the routes, 405, bad JSON, 413, 500', async () => {
  const s = await start(new FakeControl());
  const t = { socketPath: s.socketPath };
  const nf = await raw(t, 'GET', '/v1/networks/nope');
  assert.equal(nf.status, 404);
  assert.deepEqual(nf.json, { error: "no network 'nope'" });
  const unk = await raw(t, 'GET', '/v2/whatever');
  assert.equal(unk.status, 404);
  assert.match(unk.json.error, /no route GET \/v2\/whatever/);
  assert.ok(unk.json.routes.includes('POST /v1/networks/:name/forwards'));
  assert.ok(unk.json.routes.includes('GET /metrics'));
  const wrong = await raw(t, 'PUT', '/v1/status');
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.allow, 'GET');
  const bad = await raw(t, 'POST', '/v1/networks/default/forwards', '{"proto":', { 'Content-Type': 'application/json' });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error, /not valid JSON/);
  const notObj = await raw(t, 'POST', '/v1/networks/default/forwards', '[1]');
  assert.equal(notObj.status, 400);
  const big = await raw(t, 'POST', '/v1/vms', Buffer.alloc(2 << 20, 0x20)).catch((e: NodeJS.ErrnoException) => ({ status: e.code }));
  assert.ok(big.status === 413 || big.status === 'EPIPE' || big.status === 'ECONNRESET', `got ${big.status}`);
  const boom = await raw(t, 'POST', '/v1/networks/default/forwards', JSON.stringify({ hostPort: 1, guest: 'boom', guestPort: 2 }));
  assert.equal(boom.status, 500);
  assert.match(boom.json.error, /internal error: kaboom/);
  // the client turns errors into ApiError with the daemon's message
  await assert.rejects(new ApiClient(s.socketPath).get('/v1/networks/zzz'), (e: unknown) => e instanceof ApiError && e.status === 404 && /no network 'zzz'/.test(e.message));
});

test('forwards: add (validated; 409 on conflict), remove by id or proto:port, 404 for an unknown id', async () => {
  const fake = new FakeControl();
  const s = await start(fake);
  const c = new ApiClient(s.socketPath);
  const f = await c.post<ForwardInfo>('/v1/networks/default/forwards', { proto: 'udp', hostPort: 5353, guest: '10.0.2.15', guestPort: 53 });
  assert.equal(f.id, 'udp:127.0.0.1:5353');
  assert.equal(f.source, 'runtime');
  await assert.rejects(c.post('/v1/networks/default/forwards', { proto: 'udp', hostPort: 5353, guest: 'x', guestPort: 53 }), (e: ApiError) => e.status === 409 && /exists/.test(e.message));
  await assert.rejects(c.post('/v1/networks/default/forwards', { proto: 'sctp', hostPort: 1, guest: 'x', guestPort: 1 }), (e: ApiError) => e.status === 400 && /proto/.test(e.message));
  await assert.rejects(c.post('/v1/networks/default/forwards', { hostPort: 70000, guest: 'x', guestPort: 1 }), (e: ApiError) => e.status === 400 && /hostPort/.test(e.message));
  await assert.rejects(c.post('/v1/networks/default/forwards', { hostPort: 1, guestPort: 1 }), (e: ApiError) => e.status === 400 && /guest/.test(e.message));
  await assert.rejects(c.post('/v1/networks/default/forwards', { hostPort: 1, guest: 'x', guestPort: 1, hostAddr: 'example.com' }), (e: ApiError) => e.status === 400 && /hostAddr/.test(e.message));
  await assert.rejects(c.post('/v1/networks/nope/forwards', { hostPort: 1, guest: 'x', guestPort: 1 }), (e: ApiError) => e.status === 404);
  const r = await c.del<{ removed: ForwardInfo[] }>(`/v1/networks/default/forwards/${encodeURIComponent('udp:127.0.0.1:5353')}`);
  assert.deepEqual(r.removed.map((x) => x.id), ['udp:127.0.0.1:5353']);
  const r2 = await c.del<{ removed: ForwardInfo[] }>('/v1/networks/default/forwards/tcp:2222');
  assert.deepEqual(r2.removed.map((x) => x.id), ['tcp:127.0.0.1:2222']);
  await assert.rejects(c.del('/v1/networks/default/forwards/tcp:9'), (e: ApiError) => e.status === 404 && /no forward 'tcp:9'/.test(e.message));
  assert.equal(fake.forwards('default').length, 0);
});

/** Reads a streamed capture to its end: the bytes, their records and the trailers. */
async function readCapture(res: http.IncomingMessage): Promise<{ data: Buffer; records: number; trailers: NodeJS.Dict<string> }> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  const data = Buffer.concat(chunks);
  let records = 0;
  for (let o = 24; o + 16 <= data.length; o += 16 + data.readUInt32LE(o + 8)) records++;
  return { data, records, trailers: res.trailers };
}

test('capture: streamed pcap until the time is up, until stopped, or until the client goes; never a path', async () => {
  const fake = new FakeControl();
  const s = await start(fake);
  const c = new ApiClient(s.socketPath);
  const timed = await c.stream('POST', '/v1/networks/default/capture', { port: 'vm1', seconds: 0.3 });
  assert.equal(timed.headers['content-type'], 'application/vnd.tcpdump.pcap');
  const got = await readCapture(timed);
  assert.equal(got.data.readUInt32LE(0), 0xa1b2c3d4, 'a pcap file header first');
  assert.ok(got.records >= 1);
  assert.equal(Number(got.trailers['x-qnet-frames']), got.records, 'the frames trailer counts the records sent');
  assert.deepEqual([fake.captures[0].port, fake.captures[0].stopped], ['vm1', true]);

  const open = await c.stream('POST', '/v1/networks/default/capture', {});
  const id = String(open.headers['x-qnet-capture-id']);
  const reading = readCapture(open);
  assert.equal(fake.captures[1].stopped, false);
  assert.deepEqual((await c.get<{ id: string }[]>('/v1/captures')).map((x) => x.id), [id]);
  const stopped = await c.post<{ frames: number }>(`/v1/captures/${id}/stop`);
  assert.equal(fake.captures[1].stopped, true);
  assert.ok(stopped.frames >= 1);
  assert.equal((await reading).records, stopped.frames, 'the stream ends with every frame the stop reported');
  await assert.rejects(c.post(`/v1/captures/${id}/stop`), (e: ApiError) => e.status === 404);

  await assert.rejects(c.stream('POST', '/v1/networks/default/capture', { path: '/tmp/x.pcap' }), (e: ApiError) => e.status === 400 && /does not write capture files/.test(e.message));
  await assert.rejects(c.stream('POST', '/v1/networks/default/capture', { seconds: -1 }), (e: ApiError) => e.status === 400);
  await assert.rejects(c.stream('POST', '/v1/networks/default/capture', { port: 'nope' }), (e: ApiError) => e.status === 404);
  await assert.rejects(c.stream('POST', '/v1/networks/zzz/capture', {}), (e: ApiError) => e.status === 404);

  const gone = await c.stream('POST', '/v1/networks/default/capture', { seconds: 60 });
  const cap = fake.captures.at(-1)!;
  assert.equal(cap.stopped, false);
  gone.destroy();
  await waitFor(() => cap.stopped, { what: 'the capture of a client that went away to stop' });
});

test('attach and VMs: register, list, duplicate (409), unregister, validation', async () => {
  const fake = new FakeControl();
  const s = await start(fake);
  const c = new ApiClient(s.socketPath);
  const a = await c.post<AttachResult>('/v1/networks/default/attach', { name: 'vm1', model: 'e1000' });
  assert.equal(a.model, 'e1000');
  assert.match(a.mac, /^52:54:00:/);
  await assert.rejects(c.post('/v1/networks/default/attach', {}), (e: ApiError) => e.status === 400 && /name/.test(e.message));
  const rec: VmRecord = { name: 'vm1', network: 'default', mac: a.mac, model: 'e1000', pid: process.pid, qmp: '/run/x/vm1.qmp', sock: '/run/x/vm1.sock', startedAt: 1 };
  const created = await raw({ socketPath: s.socketPath }, 'POST', '/v1/vms', JSON.stringify(rec), { 'Content-Type': 'application/json' });
  assert.equal(created.status, 201);
  assert.deepEqual(fake.connected, ['vm1']);
  assert.deepEqual(await c.get('/v1/vms'), [rec]);
  await assert.rejects(c.post('/v1/vms', rec), (e: ApiError) => e.status === 409);
  await assert.rejects(c.post('/v1/vms', { ...rec, name: 'bad name/..' }), (e: ApiError) => e.status === 400);
  await assert.rejects(c.post('/v1/vms', { ...rec, name: 'vm2', mac: 'zz' }), (e: ApiError) => e.status === 400 && /mac/.test(e.message));
  await assert.rejects(c.post('/v1/vms', { ...rec, name: 'vm2', pid: 'x' }), (e: ApiError) => e.status === 400 && /pid/.test(e.message));
  await assert.rejects(c.post('/v1/vms', { ...rec, name: 'vm2', network: 'nope' }), (e: ApiError) => e.status === 404);
  assert.deepEqual(await c.del('/v1/vms/vm1'), { removed: 'vm1' });
  assert.deepEqual(fake.disconnected, ['vm1']);
  await assert.rejects(c.del('/v1/vms/vm1'), (e: ApiError) => e.status === 404);
});

test('unix socket: 0600 in a 0700 directory; stale sockets replaced, live ones and non-sockets refused', async () => {
  const s = await start(new FakeControl(), {}, 'perm/qnet');
  assert.equal(fs.statSync(s.socketPath).mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.dirname(s.socketPath)).mode & 0o777, 0o700);
  // live: refused, and the running server is untouched
  await assert.rejects(startApi(new FakeControl(), { socketPath: s.socketPath }), /already listening on/);
  assert.equal((await new ApiClient(s.socketPath).get<StatusInfo>('/v1/status')).version, '0.1.0');
  // not a socket
  const file = path.join(tmp.path, 'plain');
  fs.writeFileSync(file, 'x');
  await assert.rejects(startApi(new FakeControl(), { socketPath: file }), /is not a socket/);
  // stale: a socket left by a process that was SIGKILLed
  const stalePath = path.join(tmp.path, 'stale', 'api.sock');
  fs.mkdirSync(path.dirname(stalePath), { mode: 0o700 });
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stalePath)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.ok(fs.lstatSync(stalePath).isSocket());
  await assert.rejects(new ApiClient(stalePath).get('/v1/status'), (e: unknown) => e instanceof DaemonUnreachableError && /stale socket/.test(e.message));
  const s2 = await start(new FakeControl(), {}, 'stale');
  assert.equal(s2.socketPath, stalePath);
  assert.equal((await new ApiClient(stalePath).get<StatusInfo>('/v1/status')).pid, process.pid);
  await s2.close();
  assert.equal(fs.existsSync(stalePath), false, 'close removes the socket');
});

test('client: a missing socket says the daemon is not running and how to start it', async () => {
  const p = path.join(tmp.path, 'nowhere', 'api.sock');
  await assert.rejects(new ApiClient(p).get('/v1/status'),
    (e: unknown) => e instanceof DaemonUnreachableError && e.message === `qnet daemon not running: no API socket at ${p}; start it with \`qnet up\` (or point at it with --api PATH / QNET_API)`);
});

function asNobody(script: string): { code: string; stderr: string } {
  const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', script], { encoding: 'utf8', timeout: 10_000 });
  return { code: r.stdout.trim(), stderr: r.stderr };
}

const connectScript = (p: string): string =>
  `const s=require('net').connect(${JSON.stringify(p)});s.on('connect',()=>{console.log('CONNECTED');s.destroy()});s.on('error',e=>console.log(e.code))`;

test('another user cannot connect to the API socket (EACCES)', { skip: process.getuid!() !== 0 ? 'needs root to switch to nobody' : false }, async () => {
  // 1. the default layout: socket in a 0700 directory
  const s = await start(new FakeControl(), {}, 'other/qnet');
  fs.chmodSync(tmp.path, 0o755);
  fs.chmodSync(path.join(tmp.path, 'other'), 0o755);
  try {
    assert.equal(asNobody(connectScript(s.socketPath)).code, 'EACCES');
    // 2. even with the directory opened up, the socket's own 0600 keeps nobody out
    fs.chmodSync(path.dirname(s.socketPath), 0o755);
    assert.equal(asNobody(connectScript(s.socketPath)).code, 'EACCES');
    // control: with the socket opened up too, nobody could connect; so the modes are what protects it
    fs.chmodSync(s.socketPath, 0o666);
    assert.equal(asNobody(connectScript(s.socketPath)).code, 'CONNECTED');
  } finally {
    fs.chmodSync(tmp.path, 0o700);
  }
});

test('TCP API: off by default; bearer token required (401 without or wrong), loopback only unless allowed', async () => {
  const plain = await start(new FakeControl(), {}, 'notcp');
  assert.equal(plain.tcpPort, undefined);

  const token = 'a-very-secret-token-0123456789';
  const s = await start(new FakeControl(), { tcp: { host: '127.0.0.1', port: 0, token } }, 'tcp');
  assert.ok(s.tcpPort! > 0);
  const t = { port: s.tcpPort! };
  const none = await raw(t, 'GET', '/v1/status');
  assert.equal(none.status, 401);
  assert.match(none.headers['www-authenticate']!, /^Bearer/);
  assert.equal((await raw(t, 'GET', '/v1/status', undefined, { Authorization: 'Bearer wrong' })).status, 401);
  assert.equal((await raw(t, 'GET', '/v1/status', undefined, { Authorization: `Bearer ${token}x` })).status, 401);
  assert.equal((await raw(t, 'GET', '/v1/status', undefined, { Authorization: `Basic ${token}` })).status, 401);
  assert.equal((await raw(t, 'GET', '/v2/x', undefined, {})).status, 401, 'no route listing without a token');
  const ok = await raw(t, 'GET', '/v1/status', undefined, { Authorization: `Bearer ${token}` });
  assert.equal(ok.status, 200);
  assert.equal(ok.json.version, '0.1.0');
  // the client sends the token from QNET_API_TOKEN or its options
  assert.equal((await new ApiClient(`http://127.0.0.1:${s.tcpPort}`, { token }).get<StatusInfo>('/v1/status')).version, '0.1.0');
  await assert.rejects(new ApiClient(`http://127.0.0.1:${s.tcpPort}`, { token: 'nope' }).get('/v1/status'), (e: ApiError) => e.status === 401);
  // the unix socket needs no token
  assert.equal((await raw({ socketPath: s.socketPath }, 'GET', '/v1/status')).status, 200);

  await assert.rejects(startApi(new FakeControl(), { socketPath: path.join(tmp.path, 't2', 'api.sock'), tcp: { host: '0.0.0.0', port: 0, token } }), /non-loopback/);
  await assert.rejects(startApi(new FakeControl(), { socketPath: path.join(tmp.path, 't3', 'api.sock'), tcp: { host: '127.0.0.1', port: 0, token: '' } }), /needs a token/);
  await assert.rejects(startApi(new FakeControl(), { socketPath: path.join(tmp.path, 't4', 'api.sock'), tcp: { host: '0.0.0.0', port: 0, token: '', allowNonLoopback: true } }), /needs a token/);
  // a failed TCP start does not leave the unix socket behind
  assert.equal(fs.existsSync(path.join(tmp.path, 't2', 'api.sock')), false);
});

test('close() stops running captures and frees the socket path', async () => {
  const fake = new FakeControl();
  const s = await startApi(fake, { socketPath: path.join(tmp.path, 'closing', 'api.sock') });
  const res = await new ApiClient(s.socketPath).stream('POST', '/v1/networks/lab/capture', {});
  res.resume();
  const ended = new Promise((r) => res.on('close', r));
  await s.close();
  await ended;
  assert.equal(fake.captures[0].stopped, true);
  assert.equal(fs.existsSync(s.socketPath), false);
  await assert.rejects(new Promise((resolve, reject) => net.connect(s.socketPath).on('connect', resolve).on('error', reject)), /ENOENT/);
});
