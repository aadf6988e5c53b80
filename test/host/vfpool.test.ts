// The VF pool on a fake kernel: one VF per VM with the VM's MAC and the pool's VLAN, bound to
// vfio-pci; given back with its settings and driver restored; never the same VF twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { standardMachine } from './fake-kernel.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { DriverRecords, RefusedError } from '../../src/host/pci/vfio.ts';
import { VfPool, type VfAssignment } from '../../src/host/pci/vfpool.ts';
import { executeNumVfs, planNumVfs } from '../../src/host/pci/sriov.ts';

function setup(vfs: number) {
  const k = standardMachine({ vfio: true });
  const st = makeTempDir('pool-state-');
  const host = k.host();
  executeNumVfs(host, planNumVfs(host, 'enp1s0', vfs));
  const assignments: VfAssignment[] = [];
  let changes = 0;
  const pool = new VfPool({ network: 'sriov', pfs: ['enp1s0'], vlan: 42 }, host, new DriverRecords(st.path), assignments, () => { changes++; });
  return { k, pool, assignments, changes: () => changes, done: () => { k.cleanup(); st.remove(); } };
}

test('vf pool: two VMs get two VFs with their MACs and the VLAN; a third is refused; a released VF is free again', async () => {
  const { k, pool, assignments, changes, done } = setup(2);
  try {
    const a1 = await pool.allocate('vm1', '52:54:00:00:00:a1', process.pid);
    assert.deepEqual({ ...a1, since: 0 }, {
      vm: 'vm1', bdf: '0000:01:10.0', pf: '0000:01:00.0', index: 0, mac: '52:54:00:00:00:a1', vlan: 42, pid: process.pid, since: 0,
      prev: { mac: '00:00:00:00:00:00', vlan: 0, spoofchk: true },
    });
    assert.equal(k.driverOf('0000:01:10.0'), 'vfio-pci');
    assert.deepEqual(k.vfConfig.get('0000:01:00.0')![0], { mac: '52:54:00:00:00:a1', vlan: 42, qos: 0, spoofchk: true, trust: false });
    const a2 = await pool.allocate('vm2', '52:54:00:00:00:a2', process.pid);
    assert.equal(a2.bdf, '0000:01:10.2');
    assert.equal(k.driverOf('0000:01:10.2'), 'vfio-pci');
    assert.deepEqual(pool.members().map((m) => [m.bdf, m.state, m.vm]), [['0000:01:10.0', 'assigned', 'vm1'], ['0000:01:10.2', 'assigned', 'vm2']]);
    await assert.rejects(pool.allocate('vm3', '52:54:00:00:00:a3', process.pid), (e: Error) =>
      e instanceof RefusedError && /network 'sriov' has no free VF \(2 VFs on enp1s0; assigned: vm1: 0000:01:10\.0, vm2: 0000:01:10\.2\)/.test(e.message));
    await assert.rejects(pool.allocate('vm1', '52:54:00:00:00:a1', process.pid), /VM 'vm1' already has VF 0 of 0000:01:00\.0/);

    assert.equal(await pool.release('vm1'), true);
    assert.equal(k.driverOf('0000:01:10.0'), 'igbvf', 'the VF is back on its driver');
    assert.deepEqual(k.vfConfig.get('0000:01:00.0')![0], { mac: '00:00:00:00:00:00', vlan: 0, qos: 0, spoofchk: true, trust: false });
    assert.equal(await pool.release('vm1'), false);
    const a3 = await pool.allocate('vm3', '52:54:00:00:00:a3', process.pid);
    assert.equal(a3.bdf, '0000:01:10.0', 'the freed VF goes to the next VM');
    assert.deepEqual(assignments.map((a) => a.vm), ['vm2', 'vm3']);
    assert.equal(changes(), 4); // vm1, vm2 in; vm1 out; vm3 in
  } finally { done(); }
});

test('vf pool: allocations at the same time get different VFs', async () => {
  const { pool, done } = setup(3);
  try {
    const got = await Promise.all(['a', 'b', 'c'].map((vm, i) => pool.allocate(vm, `52:54:00:00:01:0${i}`, process.pid)));
    assert.deepEqual(got.map((a) => a.bdf).sort(), ['0000:01:10.0', '0000:01:10.2', '0000:01:10.4']);
  } finally { done(); }
});

test('vf pool: a VF bound to vfio-pci outside the pool is skipped; a dead holder is reaped', async () => {
  const { k, pool, done } = setup(2);
  try {
    const host = k.host();
    host.write('bus/pci/devices/0000:01:10.0/driver_override', 'vfio-pci');
    host.write('bus/pci/drivers/igbvf/unbind', '0000:01:10.0');
    host.write('bus/pci/drivers_probe', '0000:01:10.0');
    assert.equal(pool.members()[0].state, 'unavailable');
    const a = await pool.allocate('vm1', '52:54:00:00:00:b1', 999_999_999);
    assert.equal(a.bdf, '0000:01:10.2');
    const reaped = await pool.reap((pid) => pid !== 999_999_999);
    assert.deepEqual(reaped, ['vm1']);
    assert.equal(k.driverOf('0000:01:10.2'), 'igbvf');
    assert.equal(pool.info().free, 1);
  } finally { done(); }
});

test('vf pool: a bind that fails puts the VF settings back', async () => {
  const { k, pool, done } = setup(1);
  try {
    const orig = k.write.bind(k);
    k.write = (f, v) => { if (f.endsWith('drivers_probe')) throw Object.assign(new Error('EIO: broken'), { code: 'EIO' }); orig(f, v); };
    await assert.rejects(pool.allocate('vm1', '52:54:00:00:00:c1', process.pid), /bind failed/);
    assert.deepEqual(k.vfConfig.get('0000:01:00.0')![0].mac, '00:00:00:00:00:00');
    assert.equal(k.driverOf('0000:01:10.0'), 'igbvf');
    assert.equal(pool.assignments.length, 0);
  } finally { done(); }
});
