// vfio-pci binding on a fake kernel: the writes and their order, the driver remembered and
// restored, and every refusal naming what blocks it while changing nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { standardMachine, type FakeKernel } from './fake-kernel.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { DriverRecords, RefusedError, executePlan, formatSteps, planBind, planUnbind } from '../../src/host/pci/vfio.ts';

function setup(o: { iommu?: boolean; vfio?: boolean } = {}): { k: FakeKernel; records: DriverRecords; done: () => void } {
  const k = standardMachine({ vfio: true, ...o });
  const st = makeTempDir('vfio-state-');
  return { k, records: new DriverRecords(st.path), done: () => { k.cleanup(); st.remove(); } };
}

async function refused(k: FakeKernel, p: Promise<unknown> | (() => unknown), re: RegExp): Promise<void> {
  const before = k.snapshot();
  const writes = k.writes.length;
  await assert.rejects(async () => (typeof p === 'function' ? p() : p), (e: Error) => {
    assert.ok(e instanceof RefusedError, `expected a refusal, got ${e.stack}`);
    assert.match(e.message, re);
    return true;
  });
  assert.equal(k.writes.length, writes, 'a refusal writes nothing');
  assert.equal(k.snapshot(), before, 'a refusal changes nothing in sysfs');
}

test('vfio bind: override, unbind, probe, in that order; the original driver is remembered; unbind restores it', async () => {
  const { k, records, done } = setup();
  try {
    const host = k.host();
    host.write('bus/pci/devices/0000:01:00.0/sriov_numvfs', '2');
    k.writes.length = 0;
    const vf = '0000:01:10.0';
    const plan = await planBind(host, vf);
    assert.deepEqual(formatSteps(plan).map((l) => l.replace(k.sys, '/sys').replace(/ +#.*/, '')), [
      'echo vfio-pci > /sys/bus/pci/devices/0000:01:10.0/driver_override',
      'echo 0000:01:10.0 > /sys/bus/pci/drivers/igbvf/unbind',
      'echo 0000:01:10.0 > /sys/bus/pci/drivers_probe',
    ]);
    assert.equal(k.writes.length, 0, 'planning writes nothing');
    await executePlan(host, plan, records, 'test');
    assert.deepEqual(k.writes, [
      { file: 'bus/pci/devices/0000:01:10.0/driver_override', value: 'vfio-pci' },
      { file: 'bus/pci/drivers/igbvf/unbind', value: vf },
      { file: 'bus/pci/drivers_probe', value: vf },
    ]);
    assert.equal(k.driverOf(vf), 'vfio-pci');
    assert.equal(k.readAttr(vf, 'driver_override'), 'vfio-pci');
    assert.equal(records.get(vf)?.driver, 'igbvf');
    assert.equal(records.get(vf)?.by, 'test');
    assert.equal(k.driverOf('0000:01:10.2'), 'igbvf', 'the other VF is untouched');

    k.writes.length = 0;
    const back = planUnbind(host, vf, records);
    await executePlan(host, back, records, 'test');
    assert.deepEqual(k.writes, [
      { file: 'bus/pci/drivers/vfio-pci/unbind', value: vf },
      { file: 'bus/pci/devices/0000:01:10.0/driver_override', value: '\n' },
      { file: 'bus/pci/drivers/igbvf/bind', value: vf },
    ]);
    assert.equal(k.driverOf(vf), 'igbvf');
    assert.equal(k.readAttr(vf, 'driver_override'), '(null)');
    assert.equal(records.get(vf), undefined, 'the record goes once the driver is back');
  } finally { done(); }
});

test('vfio bind: a group member bound to a host driver blocks, named; --group moves both and unbind --group restores both', async () => {
  const { k, records, done } = setup();
  try {
    const host = k.host();
    await refused(k, planBind(host, '0000:02:00.0'), /IOMMU group 4 of 0000:02:00.0 also holds 0000:02:00.1 \(enp2s0f1, .*driver e1000e\), bound to a host driver; .*--group/);
    const plan = await planBind(host, '0000:02:00.0', { group: true });
    assert.deepEqual(plan.changes, [{ bdf: '0000:02:00.0', from: 'e1000e', to: 'vfio-pci' }, { bdf: '0000:02:00.1', from: 'e1000e', to: 'vfio-pci' }]);
    await executePlan(host, plan, records, 'test');
    assert.equal(k.driverOf('0000:02:00.0'), 'vfio-pci');
    assert.equal(k.driverOf('0000:02:00.1'), 'vfio-pci');
    k.writes.length = 0;
    await executePlan(host, planUnbind(host, '0000:02:00.0', records, { group: true }), records, 'test');
    assert.equal(k.driverOf('0000:02:00.0'), 'e1000e');
    assert.equal(k.driverOf('0000:02:00.1'), 'e1000e');
    assert.deepEqual(k.writes.map((w) => w.file), [
      'bus/pci/drivers/vfio-pci/unbind', 'bus/pci/devices/0000:02:00.0/driver_override', 'bus/pci/drivers/e1000e/bind',
      'bus/pci/drivers/vfio-pci/unbind', 'bus/pci/devices/0000:02:00.1/driver_override', 'bus/pci/drivers/e1000e/bind',
    ]);
  } finally { done(); }
});

test('vfio bind: the NIC with the default route, an address, or a bridge port is refused and named', async () => {
  const { k, records, done } = setup();
  try {
    const host = k.host();
    await refused(k, planBind(host, '0000:00:19.0'), /eno1 has the address 192\.168\.1\.5\/24 in use; 0000:00:19\.0: eno1 carries the host's default route \(via 192\.168\.1\.1\)/);
    // a port of a bridge that holds the address is just as much in use
    k.addBridge('br0', ['enp2s0f0']);
    k.addresses.set('br0', [{ family: 'inet', local: '10.0.0.2', prefixlen: 16, scope: 'global' }]);
    await refused(k, planBind(host, '0000:02:00.0', { group: true }), /0000:02:00\.0: enp2s0f0's bridge br0 has the address 10\.0\.0\.2\/16 in use/);
    // the link-local address alone is no use
    k.addresses.set('enp1s0', [{ family: 'inet6', local: 'fe80::5054:ff:fe12:3456', prefixlen: 64, scope: 'link' }]);
    assert.equal((await planBind(host, '0000:01:00.0')).changes.length, 1);
    void records;
  } finally { done(); }
});

test('vfio bind: a PF with VFs enabled is refused (its VFs would vanish)', async () => {
  const { k, done } = setup();
  try {
    const host = k.host();
    host.write('bus/pci/devices/0000:01:00.0/sriov_numvfs', '3');
    await refused(k, planBind(host, '0000:01:00.0'), /0000:01:00\.0 has 3 VFs enabled, .*qnet host sriov 0000:01:00\.0 --vfs 0/);
  } finally { done(); }
});

test('vfio bind: no IOMMU is refused with what to do', async () => {
  const { k, done } = setup({ iommu: false });
  try {
    await refused(k, planBind(k.host(), '0000:01:00.0'), /no IOMMU is active .*intel_iommu=on/);
  } finally { done(); }
});

test('vfio bind: vfio-pci not loaded: modprobe first (live kernel), refused on a tree without modprobe', async () => {
  const { k, records, done } = setup({ vfio: false });
  try {
    const host = k.host();
    const plan = await planBind(host, '0000:01:00.0');
    assert.equal(plan.modprobe, 'vfio-pci');
    assert.equal(formatSteps(plan)[0], 'modprobe vfio-pci');
    await executePlan(host, plan, records, 'test');
    assert.deepEqual(k.modprobes, ['vfio-pci']);
    assert.equal(k.driverOf('0000:01:00.0'), 'vfio-pci');
    const { Host } = await import('../../src/host/pci/sysfs.ts');
    const k2 = standardMachine({ vfio: false });
    try {
      await refused(k2, planBind(new Host({ sysfs: k2.sys, procfs: k2.proc, devfs: k2.dev, ip: (a) => k2.ip(a), write: (f, v) => k2.write(f, v) }), '0000:01:00.0'), /vfio-pci is not loaded .*modprobe vfio-pci/);
    } finally { k2.cleanup(); }
  } finally { done(); }
});

test('vfio unbind: refused while a process holds /dev/vfio/N, naming it; a device not on vfio-pci is left alone', async () => {
  const { k, records, done } = setup();
  try {
    const host = k.host();
    await executePlan(host, await planBind(host, '0000:01:00.0'), records, 'test');
    k.addVfioUser(4242, 'qemu-system-x86', 3);
    await refused(k, () => planUnbind(host, '0000:01:00.0', records), /IOMMU group 3 \(.*\/dev\/vfio\/3\) is open in pid 4242 \(qemu-system-x86\)/);
    const plan = planUnbind(host, '0000:00:19.0', records);
    assert.deepEqual(plan.steps, []);
    assert.match(plan.notes[0], /0000:00:19\.0 is not bound to vfio-pci \(driver e1000e\); nothing to do/);
  } finally { done(); }
});

test('vfio unbind without a record: the kernel picks the driver (drivers_probe), and says so', async () => {
  const { k, records, done } = setup();
  try {
    const host = k.host();
    await executePlan(host, await planBind(host, '0000:01:00.0'), records, 'test');
    records.remove('0000:01:00.0');
    k.writes.length = 0;
    const plan = planUnbind(host, '0000:01:00.0', records);
    assert.match(plan.notes.join('\n'), /no record of 0000:01:00\.0's driver before vfio-pci; the kernel picks one/);
    await executePlan(host, plan, records, 'test');
    assert.deepEqual(k.writes.map((w) => w.file), ['bus/pci/drivers/vfio-pci/unbind', 'bus/pci/devices/0000:01:00.0/driver_override', 'bus/pci/drivers_probe']);
    assert.equal(k.driverOf('0000:01:00.0'), 'igb');
  } finally { done(); }
});

test('vfio bind: a failed write puts the device back and names the step', async () => {
  const { k, records, done } = setup();
  try {
    const host = k.host();
    const plan = await planBind(host, '0000:01:00.0');
    // make the probe step fail: the kernel refuses it
    const orig = k.write.bind(k);
    k.write = (f, v) => { if (f.endsWith('drivers_probe')) throw Object.assign(new Error('ENOMEM: no memory'), { code: 'ENOMEM' }); orig(f, v); };
    await assert.rejects(executePlan(k.host(), plan, records, 'test'), /bind failed at 'echo 0000:01:00\.0 > .*drivers_probe .*ENOMEM.*put back: 0000:01:00\.0 -> igb/);
    assert.equal(k.driverOf('0000:01:00.0'), 'igb');
    assert.equal(k.readAttr('0000:01:00.0', 'driver_override'), '(null)');
  } finally { done(); }
});
