// Issue 13, case 6: capture used to write any absolute path it was given, as the daemon's
// user (root here), truncating files and following symlinks. Now the API never takes a path:
// it streams the pcap and `qnet capture -w FILE` writes FILE as whoever runs it. Run as
// nobody (setpriv) against the TCP API with the token: nobody's own file is written, owned by
// nobody; a path or a symlink nobody may not write stays untouched. A well-behaved guest
// keeps pinging through the capture and the API keeps answering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Daemon } from '../../src/daemon/daemon.ts';
import { startApi } from '../../src/daemon/api.ts';
import { ApiClient, ApiError } from '../../src/daemon/client.ts';
import { parseConfig } from '../../src/config/config.ts';
import { PcapWriter } from '../../src/switch/pcap.ts';
import type { StatusInfo } from '../../src/daemon/types.ts';
import { setLogSink } from '../../src/util/log.ts';
import { makeTempDir, onExit } from '../helpers/cleanup.ts';
import { RawGuest, ip, until } from '../network/raw-guest.ts';

setLogSink(() => {});
const tmp = makeTempDir('hostile-capture-');
const MAIN = path.resolve(import.meta.dirname, '../../src/cli/main.ts');
const token = 't'.repeat(24);
const NOBODY = 65534;

/** `qnet ARGS` as nobody; resolves when it exits. */
function qnetAsNobody(args: string[], env: NodeJS.ProcessEnv) {
  const c = spawn('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '--import', 'tsx', MAIN, ...args], {
    env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], cwd: path.dirname(MAIN),
  });
  const pid = c.pid!;
  const unregister = onExit(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  const r = { out: '', err: '', exited: null as unknown as Promise<number | null> };
  c.stdout!.on('data', (d: Buffer) => { r.out += d; });
  c.stderr!.on('data', (d: Buffer) => { r.err += d; });
  r.exited = new Promise((res) => c.on('close', (code) => { unregister(); res(code); }));
  return r;
}

test('capture as nobody: the file is written by the CLI as nobody; the API takes no path; nothing is written where nobody may not write', { timeout: 90_000 }, async (t) => {
  const rt = path.join(tmp.path, 'rt'), state = path.join(tmp.path, 'state');
  const config = parseConfig(`networks:\n  - name: lab\n    mode: isolated\n    subnet: 10.93.0.0/24\n    attach: unix:${path.join(rt, 'lab.sock')}\n`, 'test.yaml', { runtimeDir: rt, stateDir: state });
  const daemon = await Daemon.start(config);
  t.after(() => daemon.stop());
  const api = await startApi(daemon, { socketPath: path.join(rt, 'api.sock'), tcp: { host: '127.0.0.1', port: 0, token }, limits: daemon.limits });
  t.after(() => api.close());
  const guest = await RawGuest.connect(path.join(rt, 'lab.sock'), '52:54:00:12:34:56', { ip: ip('10.93.0.1'), mac: '52:55:0a:5d:00:01' });
  t.after(() => guest.close());
  await guest.lease();

  // nobody's own directory, and a root-only one with a file nobody must not be able to touch
  const mine = path.join(tmp.path, 'nobody');
  fs.mkdirSync(mine);
  fs.chownSync(mine, NOBODY, NOBODY);
  fs.chmodSync(path.dirname(mine), 0o755);
  const secret = path.join(tmp.path, 'root-only', 'secret');
  fs.mkdirSync(path.dirname(secret), { mode: 0o755 });
  fs.writeFileSync(secret, 'root\'s data', { mode: 0o600 });
  fs.symlinkSync(secret, path.join(mine, 'link.pcap'));
  const env = { QNET_API_TOKEN: token };
  const apiUrl = `http://127.0.0.1:${api.tcpPort}`;

  // a capture into nobody's directory, while the guest pings
  const out = path.join(mine, 'lab.pcap');
  const cap = qnetAsNobody(['capture', 'lab', '-w', out, '--api', apiUrl], env);
  await until(() => /Ctrl-C stops/.test(cap.err) || cap.err.includes('qnet capture:'), 'the capture to start', 30_000);
  assert.match(cap.err, /capturing lab to/);
  for (let k = 1; k <= 5; k++) await guest.ping(undefined, 0x77, k);
  assert.equal((await new ApiClient(path.join(rt, 'api.sock')).get<StatusInfo>('/v1/status')).networks[0].name, 'lab', 'the API answers during the capture');
  const running = await new ApiClient(apiUrl, { token }).get<{ id: string }[]>('/v1/captures');
  assert.equal(running.length, 1);
  await new ApiClient(apiUrl, { token }).post(`/v1/captures/${running[0].id}/stop`);
  assert.equal(await cap.exited, 0, cap.err);
  const st = fs.statSync(out);
  assert.equal(st.uid, NOBODY, 'the file belongs to the user who ran qnet capture');
  assert.equal(st.mode & 0o777, 0o600);
  const pcap = fs.readFileSync(out);
  assert.equal(pcap.readUInt32LE(0), 0xa1b2c3d4);
  let echoes = 0;
  for (let o = 24; o + 16 <= pcap.length; o += 16 + pcap.readUInt32LE(o + 8)) {
    const f = pcap.subarray(o + 16, o + 16 + pcap.readUInt32LE(o + 8));
    if (f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 8 && f.readUInt16BE(38) === 0x77) echoes++;
  }
  assert.equal(echoes, 5, 'the five echo requests are in the file');
  const frames = Number(/(\d+) frames captured/.exec(cap.err)?.[1]);
  assert.ok(frames >= 10, `the CLI counted ${frames} frames`);

  // through a symlink to root's file, and into root's directory: refused by the kernel, as nobody
  for (const target of [path.join(mine, 'link.pcap'), path.join(path.dirname(secret), 'new.pcap')]) {
    const r = qnetAsNobody(['capture', 'lab', '-w', target, '--seconds', '1', '--api', apiUrl], env);
    assert.equal(await r.exited, 1);
    assert.match(r.err, /cannot write .*EACCES|permission denied/i);
  }
  assert.equal(fs.readFileSync(secret, 'utf8'), 'root\'s data', 'root\'s file is untouched');
  assert.equal(fs.existsSync(path.join(path.dirname(secret), 'new.pcap')), false);

  // the API itself refuses a path (it would write it as root)
  await assert.rejects(new ApiClient(apiUrl, { token }).stream('POST', '/v1/networks/lab/capture', { path: secret }), (e: ApiError) => e.status === 400 && /does not write capture files/.test(e.message));
  assert.equal(fs.readFileSync(secret, 'utf8'), 'root\'s data');
  await guest.ping(undefined, 0x78, 1);
});

test('pcap: a header write that fails closes the file again (no descriptor leaks)', () => {
  const fds = () => fs.readdirSync('/proc/self/fd').length;
  const before = fds();
  for (let k = 0; k < 50; k++) assert.throws(() => PcapWriter.toFile('/dev/full'), /cannot write the capture file \/dev\/full: ENOSPC/);
  assert.equal(fds(), before);
});
