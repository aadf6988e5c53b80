// MACs chosen by the caller (`qnet run/attach --mac`) and static hosts named by VM
// (`hosts: [{ vm: NAME, ip }]`), on a userspace network (the same code serves kernel ones);
// and who may use which API route when other users reach the socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { parseConfig } from '../../src/config/config.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { ForbiddenError } from '../../src/daemon/types.ts';
import { ip4ToString } from '../../src/wire/addr.ts';
import { tmpDir } from '../link/peers.ts';

const cfg = (dir: string, extra = '') => parseConfig(`runtimeDir: ${dir}/run\nstateDir: ${dir}/state\nnetworks:\n  - name: a\n    subnet: 10.5.0.0/24\n    upstreams: [127.0.0.1:9]\n${extra}`, 'qnet.yaml');

test('attach --mac: the given MAC is used and kept; another VM may not take it; multicast is refused', async () => {
  const dir = tmpDir('qnet-macs-');
  const d = await Daemon.start(cfg(dir));
  try {
    const a = d.attach('a', 'vm1', undefined, '52:54:00:aa:bb:cc');
    assert.equal(a.mac, '52:54:00:aa:bb:cc');
    assert.match(a.args[3], /mac=52:54:00:aa:bb:cc$/);
    assert.equal(d.attach('a', 'vm1').mac, '52:54:00:aa:bb:cc', 'kept for the name');
    assert.throws(() => d.attach('a', 'vm2', undefined, '52:54:00:aa:bb:cc'), (e: Error & { status?: number }) => e.status === 409 && /already VM 'vm1's/.test(e.message));
    assert.throws(() => d.attach('a', 'vm2', undefined, '01:00:5e:00:00:01'), /multicast/);
    assert.equal(d.attach('a', 'vm1', undefined, '52:54:00:aa:bb:cd').mac, '52:54:00:aa:bb:cd', 'a VM may change its own MAC');
  } finally {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('hosts by VM name: the VM gets a MAC, the DHCP server reserves the address for it, and attach agrees', async () => {
  const dir = tmpDir('qnet-hostvm-');
  const d = await Daemon.start(cfg(dir, '    hosts: [{ vm: db, ip: 10.5.0.10 }]\n'));
  try {
    const statics = d.net('a').opts.staticHosts ?? [];
    assert.equal(statics.length, 1);
    const mac = statics[0].mac;
    assert.match(mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.equal(ip4ToString(statics[0].ip as number), '10.5.0.10');
    assert.equal(statics[0].hostname, 'db');
    assert.equal(d.attach('a', 'db').mac, mac, 'qnet run/attach --name db gets that MAC');
    assert.throws(() => d.attach('a', 'db', undefined, '52:54:00:01:02:03'), (e: Error & { status?: number }) => e.status === 409 && /static host/.test(e.message));
    assert.equal(d.net('a').addressOf('db'), statics[0].ip, 'its name resolves before it ever asks');
  } finally {
    await d.stop();
  }
  // the same MAC after a restart
  const d2 = await Daemon.start(cfg(dir, '    hosts: [{ vm: db, ip: 10.5.0.10 }]\n'));
  try {
    assert.equal(d2.attach('a', 'db').mac, (d2.net('a').opts.staticHosts ?? [])[0].mac);
  } finally {
    await d2.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('authorisation: other users reach only the user routes, and only kernel networks that allow them', async () => {
  const dir = tmpDir('qnet-authz-');
  const d = await Daemon.start(cfg(dir));
  try {
    const nobody = { pid: 1, uid: 65534, gid: 65534, groups: [] };
    assert.doesNotThrow(() => d.authorize(null, { method: 'GET', pattern: '/v1/networks', userRoute: false }), 'the TCP API (token) and internal calls');
    assert.doesNotThrow(() => d.authorize({ ...nobody, uid: 0, gid: 0 }, { method: 'DELETE', pattern: '/v1/networks/:name/forwards/:id', userRoute: false }));
    assert.throws(() => d.authorize(nobody, { method: 'POST', pattern: '/v1/networks/:name/forwards', userRoute: false }),
      (e: Error) => e instanceof ForbiddenError && e.message === "nobody (uid 65534) may not use POST /v1/networks/:name/forwards: only root and the daemon's own user may; other users may attach VMs to kernel networks that allow them");
    assert.doesNotThrow(() => d.authorize(nobody, { method: 'POST', pattern: '/v1/networks/:name/attach', userRoute: true }));
    assert.throws(() => d.attach('a', 'x', undefined, undefined, nobody), /nobody \(uid 65534\) may not attach VMs to network 'a': it is a userspace network/);
    assert.deepEqual(d.vms(nobody), [], 'nobody sees only its own VMs');
  } finally {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
