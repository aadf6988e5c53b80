// Descriptor passing and peer credentials over a unix socket (no network is touched): a server
// in this process hands a file descriptor with an HTTP reply (sendWithFds) to a client that runs
// as another user (setpriv nobody) and reads through it (fdRequest); the server sees who it is
// from the socket itself (peerCredentials). A silent server makes the client give up on time.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { closeFd, fdRequest, peerCredentials, sendWithFds, type PeerCred } from '../../src/host/fdpass.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { repoRoot } from '../helpers/user-net.ts';

const tmp = makeTempDir('fdpass-');
after(() => tmp.remove());
const root = process.getuid?.() === 0;

const client = `
import { fdRequest, closeFd } from ${JSON.stringify(path.join(repoRoot, 'src/host/fdpass.ts'))};
import fs from 'node:fs';
const r = fdRequest(process.argv[2], 'POST', '/v1/taps', { vm: 'x' }, Number(process.argv[3] ?? 5000));
const text = r.fds.length ? fs.readFileSync(r.fds[0], 'utf8') : '';
for (const f of r.fds) closeFd(f);
console.log(JSON.stringify({ status: r.status, body: r.body, nfds: r.fds.length, text }));
`;

test('a descriptor travels with the reply; the server knows the client by its socket', { skip: !root && 'needs root (runs the client as nobody)' }, async () => {
  fs.chmodSync(tmp.path, 0o755);
  const sock = path.join(tmp.path, 'api.sock');
  const file = path.join(tmp.path, 'secret.txt');
  fs.writeFileSync(file, 'only-root-can-open-this', { mode: 0o600 });
  const script = path.join(tmp.path, 'client.mts');
  fs.writeFileSync(script, client);
  let who: PeerCred | undefined;
  let request = '';
  const srv = net.createServer((c) => {
    who = peerCredentials(c);
    c.on('data', (d) => {
      request += d.toString();
      if (!request.includes('\r\n\r\n')) return;
      const fd = fs.openSync(file, 'r');
      const body = '{"tap":"qn-x"}';
      sendWithFds(c, Buffer.from(`HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`), [fd]);
      closeFd(fd);
      c.destroy();
    });
  });
  await new Promise<void>((r) => srv.listen(sock, () => r()));
  fs.chmodSync(sock, 0o666);
  // (async: the server answers from this process's event loop)
  const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--import', 'tsx', script, sock], { cwd: repoRoot });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d; });
    p.stderr.on('data', (d: Buffer) => { stderr += d; });
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
  srv.close();
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { status: 201, body: { tap: 'qn-x' }, nfds: 1, text: 'only-root-can-open-this' });
  assert.deepEqual([who?.uid, who?.gid, who?.groups], [65534, 65534, []]);
  assert.ok((who?.pid ?? 0) > 1);
  assert.match(request, /^POST \/v1\/taps HTTP\/1\.1\r\n[\s\S]*Connection: close\r\n[\s\S]*\r\n\r\n\{"vm":"x"\}$/);
});

test('a server that never answers: the client gives up with ETIMEDOUT', { timeout: 30_000 }, async () => {
  const sock = path.join(tmp.path, 'silent.sock');
  const held: net.Socket[] = [];
  const srv = net.createServer((c) => { held.push(c); });
  await new Promise<void>((r) => srv.listen(sock, () => r()));
  const script = path.join(tmp.path, 'client2.mts');
  fs.writeFileSync(script, client);
  const child = await new Promise<{ code: number | null; err: string }>((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', script, sock, '300'], { cwd: repoRoot });
    let err = '';
    p.stderr.on('data', (d: Buffer) => { err += d; });
    p.on('close', (code: number | null) => resolve({ code, err }));
  });
  for (const c of held) c.destroy();
  srv.close();
  assert.notEqual(child.code, 0);
  assert.match(child.err, /receive .*silent\.sock: Connection timed out|ETIMEDOUT/);
  assert.throws(() => fdRequest(path.join(tmp.path, 'none.sock'), 'GET', '/'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
});
