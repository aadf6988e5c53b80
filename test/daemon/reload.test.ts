// Config reload (what SIGHUP does): unchanged networks keep running untouched (same objects,
// same guests), changed ones restart with their leases, removed ones stop, new ones start;
// and state survives a daemon restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { parseConfig } from '../../src/config/config.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { tmpDir } from '../link/peers.ts';

const cfg = (dir: string, body: string) => parseConfig(`runtimeDir: ${dir}/run\nstateDir: ${dir}/state\nnetworks:\n${body}`, 'qnet.yaml');
const net = (name: string, subnet: string, extra = '') => `  - name: ${name}\n    subnet: ${subnet}\n    upstreams: [127.0.0.1:9]\n${extra}`;

test('daemon reload restarts only what changed; state survives a restart', async () => {
  const dir = tmpDir('qnet-reload-');
  const d = await Daemon.start(cfg(dir, net('a', '10.1.0.0/24') + net('b', '10.2.0.0/24') + net('c', '10.3.0.0/24')));
  const a0 = d.net('a');
  const b0 = d.net('b');
  const att = d.attach('a', 'vm1');
  await d.addForward('b', { proto: 'tcp', hostPort: 0, guest: 'vm9', guestPort: 22 });
  const r = await d.reload(cfg(dir, net('a', '10.1.0.0/24') + net('b', '10.2.0.0/24', '    domain: b.test\n') + net('d', '10.4.0.0/24')));
  assert.deepEqual(r, { restarted: ['b'], started: ['d'], stopped: ['c'], unchanged: ['a'] });
  assert.equal(d.net('a'), a0, 'an unchanged network must keep running as it was');
  assert.notEqual(d.net('b'), b0);
  assert.equal(d.forwards('b').length, 1, 'a runtime forward survives the restart of its network');
  assert.equal((await d.network('b')).domain, 'b.test');
  assert.throws(() => d.network('c'), /no network 'c'/);
  assert.ok(fs.existsSync(path.join(dir, 'run', 'd.sock')));
  assert.ok(!fs.existsSync(path.join(dir, 'run', 'c.sock')), 'a removed network releases its socket');
  d.stop();

  // a new daemon on the same state: the VM keeps its MAC, the runtime forward comes back
  const d2 = await Daemon.start(cfg(dir, net('a', '10.1.0.0/24') + net('b', '10.2.0.0/24', '    domain: b.test\n')));
  assert.equal(d2.attach('a', 'vm1').mac, att.mac);
  assert.equal(d2.forwards('b').length, 1);
  assert.notEqual(d2.attach('a', 'vm2').mac, att.mac);
  d2.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});
