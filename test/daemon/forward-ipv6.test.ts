// Forwards with an IPv6 host side at run time (`qnet forward add NET tcp:[::1]:PORT vm:22`):
// accepted by the daemon, listed with a bracketed id, listening on [::1], kept in state across
// a restart, and removed by that id.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { parseConfig } from '../../src/config/config.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { tmpDir } from '../link/peers.ts';

const cfg = (dir: string) => parseConfig(`runtimeDir: ${dir}/run\nstateDir: ${dir}/state\nnetworks:\n  - name: lab\n    subnet: 10.30.0.0/24\n    subnet6: fd00:30::/64\n    upstreams: [127.0.0.1:9]\n`, 'qnet.yaml');

function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

test('daemon: an IPv6 host-side forward at run time', async () => {
  const dir = tmpDir('qnet-fwd6-');
  let d = await Daemon.start(cfg(dir));
  try {
    const f = await d.addForward('lab', { proto: 'tcp', hostAddr: '::1', hostPort: 0, guest: 'vm1', guestPort: 22 });
    assert.match(f.id, /^tcp:\[::1\]:\d+$/);
    assert.equal(f.hostAddr, '::1');
    assert.equal(await listening('::1', f.hostPort), true, 'the forward listens on [::1]');
    await assert.rejects(d.addForward('lab', { proto: 'tcp', hostAddr: 'fe80::zz', hostPort: 0, guest: 'vm1', guestPort: 22 }), /is not an IP address/);
    await d.stop();
    d = await Daemon.start(cfg(dir));
    const again = d.forwards('lab').find((x) => x.id === f.id);
    assert.ok(again, `restored after a restart: ${d.forwards('lab').map((x) => x.id)}`);
    assert.equal(again.source, 'runtime');
    const gone = d.removeForward('lab', f.id);
    assert.deepEqual(gone.map((x) => x.id), [f.id]);
    assert.equal(await listening('::1', f.hostPort), false);
  } finally {
    await d.stop();
  }
});
