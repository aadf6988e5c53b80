// A hostdev network (VF pool) in the daemon, on a fake kernel: config, attach hands a VF to a
// VM with its stable MAC, the VM's record, status/net show list the pool, a restart keeps a
// running VM's VF, a gone VM's VF is given back (at start and by the reaper), and the API's
// attach and DELETE do the same over HTTP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { parseConfig, ConfigError } from '../../src/config/config.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { startApi } from '../../src/daemon/api.ts';
import { ApiClient } from '../../src/daemon/client.ts';
import type { AttachResult, NetworkInfo, StatusInfo } from '../../src/daemon/types.ts';
import { formatNetwork, formatNetworks } from '../../src/cli/net.ts';
import { formatStatus } from '../../src/cli/status.ts';
import { makeTempDir, onExit } from '../helpers/cleanup.ts';
import { standardMachine } from '../host/fake-kernel.ts';
import { executeNumVfs, planNumVfs } from '../../src/host/pci/sriov.ts';
import { waitFor } from '../helpers/wait.ts';

const POOL = '  - name: sriov\n    mode: hostdev\n    pf: enp1s0\n    vlan: 42\n';
const cfg = (dir: string, body = POOL) => parseConfig(`runtimeDir: ${dir}/run\nstateDir: ${dir}/state\nnetworks:\n${body}`, 'qnet.yaml');

/** a stand-in for a VM's QEMU: a process whose pid stays alive until killed */
function fakeQemu(): { pid: number; kill: () => Promise<void> } {
  const c = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e6)'], { stdio: 'ignore' });
  const off = onExit(() => { try { c.kill('SIGKILL'); } catch { /* gone */ } });
  const gone = new Promise<void>((r) => c.once('exit', () => r()));
  return { pid: c.pid!, kill: async () => { c.kill('SIGKILL'); await gone; off(); } };
}

test('config: mode hostdev takes pf (one or a list) and vlan, and nothing a switched network takes', () => {
  const c = parseConfig('networks:\n  - name: p\n    mode: hostdev\n    pf: [enp1s0, 0000:03:00.0]\n    vlan: 7\n', 'q.yaml');
  assert.deepEqual(c.networks[0].hostdev, { pfs: ['enp1s0', '0000:03:00.0'], vlan: 7 });
  assert.deepEqual(c.networks[0].attach, []);
  assert.deepEqual(c.warnings, []);
  assert.throws(() => parseConfig('networks:\n  - name: p\n    mode: hostdev\n', 'q.yaml'), /q\.yaml:2:5: networks\[0\]: a hostdev network needs pf:/);
  assert.throws(() => parseConfig('networks:\n  - name: p\n    mode: hostdev\n    pf: eth0\n    subnet: 10.0.0.0/24\n', 'q.yaml'), /q\.yaml:5:5: networks\[0\]\.subnet: mode hostdev takes name, mode, pf, vlan; 'subnet' is for networks qnet switches itself/);
  assert.throws(() => parseConfig('networks:\n  - name: p\n    mode: hostdev\n    pf: eth0\n    vlan: 4095\n', 'q.yaml'), /networks\[0\]\.vlan: expected an integer 1-4094, got 4095/);
  assert.throws(() => parseConfig('networks:\n  - name: n\n    subnet: 10.0.0.0/24\n    vlan: 3\n', 'q.yaml'), /networks\[0\]\.vlan: 'vlan' is for mode hostdev/);
  // beside the kernel networks' modes and keys: a pool takes no bridge:, and is not a kernel-only mode
  assert.throws(() => parseConfig('networks:\n  - name: p\n    mode: hostdev\n    pf: eth0\n    bridge: br0\n', 'q.yaml'), /networks\[0\]\.bridge: mode hostdev takes name, mode, pf, vlan; 'bridge' is for networks qnet switches itself or puts on a kernel bridge/);
  assert.throws(() => parseConfig('networks:\n  - name: p\n    mode: hostdev\n    pf: eth0\n    allow: [alice]\n', 'q.yaml'), /networks\[0\]\.allow: mode hostdev takes name, mode, pf, vlan/);
  assert.throws(() => parseConfig('networks:\n  - name: n\n    mode: vepa\n', 'q.yaml'), /networks\[0\]\.mode: unknown mode 'vepa' \(nat, isolated, user or hostdev; on a bridge: also routed, open or bridge\)/);
  assert.throws(() => parseConfig('networks:\n  - name: n\n    mode: routed\n    subnet: 10.0.0.0/24\n', 'q.yaml'), /networks\[0\]\.mode: mode routed needs a kernel bridge/);
  assert.throws(() => parseConfig('networks:\n  - name: n\n    bridge: qnbr0\n    subnet: 10.0.0.0/24\n    pf: eth0\n', 'q.yaml'), /networks\[0\]\.pf: 'pf' is for mode hostdev \(a pool of SR-IOV VFs\), not mode nat/);
  const mixed = parseConfig('networks:\n  - name: p\n    mode: hostdev\n    pf: eth0\n  - name: k\n    bridge: qnbr0\n    subnet: 10.0.0.0/24\n', 'q.yaml');
  assert.deepEqual(mixed.networks.map((n) => [n.name, n.mode, n.bridge ?? '-', n.allow]), [['p', 'hostdev', '-', []], ['k', 'nat', 'qnbr0', []]]);
  assert.throws(() => parseConfig('networks:\n  - name: a\n    mode: hostdev\n    pf: eth0\n  - name: b\n    mode: hostdev\n    pf: [eth1, eth0]\n', 'q.yaml'), (e: Error) =>
    e instanceof ConfigError && /networks\[1\]\.pf\[1\]: PF eth0 is already the pool of network 'a'/.test(e.message));
});

test('daemon: a VF pool hands out VFs, lists them, keeps them across a restart, takes them back', { timeout: 60_000 }, async () => {
  const k = standardMachine({ vfio: true });
  const tmp = makeTempDir('hostdev-daemon-');
  const q1 = fakeQemu();
  const q2 = fakeQemu();
  try {
    const host = k.host();
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 2));
    const d = await Daemon.start(cfg(tmp.path), { host: () => host });
    assert.throws(() => d.attach('sriov', 'vm1'), /network 'sriov' is a VF pool \(mode hostdev\): its VFs go to qnet run only/);
    await assert.rejects(d.attachHostdev('sriov', 'vm1')!, /hands out VFs to qnet run only/);
    assert.equal(d.attachHostdev('nope', 'vm1'), undefined);
    await assert.rejects(d.addForward('sriov', { proto: 'tcp', hostPort: 0, guest: 'vm1', guestPort: 22 }), /network 'sriov' is a VF pool \(mode hostdev\): qnet is not on its data path/);
    assert.deepEqual(d.leases('sriov'), []);

    const att = await d.attachHostdev('sriov', 'vm1', process.pid)!;
    assert.deepEqual(att.args, ['-device', 'vfio-pci,host=0000:01:10.0,id=qnet0']);
    assert.deepEqual(att.hostdev, { bdf: '0000:01:10.0', pf: '0000:01:00.0', index: 0, vlan: 42 });
    assert.match(att.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.equal(k.vfConfig.get('0000:01:00.0')![0].mac, att.mac);
    assert.equal(k.driverOf('0000:01:10.0'), 'vfio-pci');
    d.connectVm({ name: 'vm1', network: 'sriov', mac: att.mac, model: 'vfio-pci', pid: q1.pid, qmp: '/run/q/vm1.qmp', startedAt: 1 });
    const att2 = await d.attachHostdev('sriov', 'vm2', process.pid)!;
    assert.equal(att2.hostdev!.bdf, '0000:01:10.2');
    d.connectVm({ name: 'vm2', network: 'sriov', mac: att2.mac, model: 'vfio-pci', pid: q2.pid, qmp: '/run/q/vm2.qmp', startedAt: 1 });
    assert.deepEqual(d.vms().map((v) => [v.name, v.hostdev]), [['vm1', '0000:01:10.0'], ['vm2', '0000:01:10.2']]);

    const info = await d.network('sriov');
    assert.equal(info.mode, 'hostdev');
    assert.deepEqual(info.pool!.members.map((m) => [m.bdf, m.state, m.vm, m.mac, m.vlan]), [['0000:01:10.0', 'assigned', 'vm1', att.mac, 42], ['0000:01:10.2', 'assigned', 'vm2', att2.mac, 42]]);
    assert.match(formatNetwork(info), /pf: +enp1s0\nvlan: +42\n\nVFs \(0 free of 2\):\n +VF +PF +INDEX +DRIVER +GROUP +STATE +VM +MAC +VLAN\n +0000:01:10\.0 +0000:01:00\.0 +0 +vfio-pci +5 +assigned +vm1 /);
    assert.match(formatNetworks(await d.networks()), /sriov +hostdev +VFs of enp1s0 +- +2\/2 VFs/);
    assert.match(formatStatus(await d.status()), /VF pools:\n  sriov: 2 assigned, 0 free of 2 VFs/);
    await d.stop();

    // a restart: vm1 still runs (keeps its VF); vm2's QEMU died meanwhile (its VF comes back)
    await q2.kill();
    const d2 = await Daemon.start(cfg(tmp.path), { host: () => host });
    assert.deepEqual((await d2.network('sriov')).pool!.members.map((m) => [m.bdf, m.state, m.vm ?? '-']), [['0000:01:10.0', 'assigned', 'vm1'], ['0000:01:10.2', 'free', '-']]);
    assert.equal(k.driverOf('0000:01:10.2'), 'igbvf');
    assert.equal(k.driverOf('0000:01:10.0'), 'vfio-pci');
    assert.deepEqual(d2.vms().map((v) => v.name), ['vm1']);
    // the same VM gets the same MAC the next time (stable per name)
    const again = await d2.attachHostdev('sriov', 'vm2', process.pid)!;
    assert.equal(again.mac, att2.mac);
    await d2.disconnectVm('vm2'); // qnet run's DELETE when QEMU failed to start: the VF goes back
    assert.equal(k.driverOf('0000:01:10.2'), 'igbvf');
    // vm1 exits without anyone telling the daemon: the reaper gives the VF back
    await q1.kill();
    d2.vms();
    // wait for the condition (the reaper runs asynchronously)
    await waitFor(() => k.driverOf('0000:01:10.0') === 'igbvf', { what: 'the reaper to give the VF back' });
    assert.equal((await d2.network('sriov')).pool!.free, 2);
    await d2.stop();
  } finally {
    await q1.kill().catch(() => {});
    await q2.kill().catch(() => {});
    k.cleanup();
    tmp.remove();
  }
});

test('api: attach on a hostdev network takes the caller pid; DELETE /v1/vms gives the VF back', async () => {
  const k = standardMachine({ vfio: true });
  const tmp = makeTempDir('hostdev-api-');
  try {
    const host = k.host();
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 1));
    const d = await Daemon.start(cfg(tmp.path), { host: () => host });
    const api = await startApi(d, { socketPath: path.join(tmp.path, 'run', 'api.sock') });
    try {
      const c = new ApiClient(api.socketPath);
      const att = await c.post<AttachResult>('/v1/networks/sriov/attach', { name: 'vm1', pid: process.pid });
      assert.equal(att.hostdev!.bdf, '0000:01:10.0');
      await assert.rejects(c.post('/v1/networks/sriov/attach', { name: 'vm2', pid: process.pid }), (e: Error & { status?: number }) => e.status === 409 && /no free VF/.test(e.message));
      await c.post('/v1/vms', { name: 'vm1', network: 'sriov', mac: att.mac, model: 'vfio-pci', pid: process.pid, qmp: '/run/q/vm1.qmp' });
      const net = await c.get<NetworkInfo>('/v1/networks/sriov');
      assert.equal(net.pool!.members[0].vm, 'vm1');
      const st = await c.get<StatusInfo>('/v1/status');
      assert.deepEqual(st.networks.map((n) => [n.name, n.mode, n.pool]), [['sriov', 'hostdev', { pfs: ['enp1s0'], total: 1, free: 0, assigned: 1 }]]);
      await c.del('/v1/vms/vm1');
      assert.equal(k.driverOf('0000:01:10.0'), 'igbvf');
      assert.equal((await c.get<NetworkInfo>('/v1/networks/sriov')).pool!.free, 1);
    } finally {
      await api.close();
      await d.stop();
    }
  } finally { k.cleanup(); tmp.remove(); }
});

test('daemon: a VF pool with the merged API: --mac for the VF, only root and the daemon\'s user take VFs, no taps', async () => {
  const k = standardMachine({ vfio: true });
  const tmp = makeTempDir('hostdev-who-');
  try {
    const host = k.host();
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 1));
    const d = await Daemon.start(cfg(tmp.path), { host: () => host });
    try {
      const nobody = { pid: process.pid, uid: 65534, gid: 65534, groups: [] };
      assert.throws(() => d.attachHostdev('sriov', 'vm1', process.pid, { who: nobody }), /uid 65534.* may not take VFs of network 'sriov'|nobody.* may not take VFs of network 'sriov'/);
      await assert.rejects(d.createTap({ network: 'sriov', vm: 'vm1' }, null), /network 'sriov' is a VF pool \(mode hostdev\): its VMs get VFs through qnet run, not taps/);
      assert.equal(d.sharedApi, false);
      const att = await d.attachHostdev('sriov', 'vm1', process.pid, { mac: '52:54:00:aa:bb:cc', who: { ...nobody, uid: 0, gid: 0 } })!;
      assert.equal(att.mac, '52:54:00:aa:bb:cc');
      assert.equal(att.kind, 'hostdev');
      assert.equal(k.vfConfig.get('0000:01:00.0')![0].mac, '52:54:00:aa:bb:cc');
      await assert.rejects(d.disconnectVm('vm1', nobody), /has a VF of a pool/);
      await d.disconnectVm('vm1');
      assert.equal(k.driverOf('0000:01:10.0'), 'igbvf');
      // the MAC given is kept for the name
      const again = await d.attachHostdev('sriov', 'vm1', process.pid)!;
      assert.equal(again.mac, '52:54:00:aa:bb:cc');
      await d.disconnectVm('vm1');
    } finally {
      await d.stop();
    }
  } finally { k.cleanup(); tmp.remove(); }
});
