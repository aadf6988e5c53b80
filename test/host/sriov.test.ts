// SR-IOV on a fake kernel: VF counts (bounds, through 0, refusals while a VF is assigned) and
// VF settings through the PF (the `ip link set PF vf N ...` request, read back).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { standardMachine } from './fake-kernel.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { executeNumVfs, planNumVfs, readVfStates, setVf, vfSetArgs } from '../../src/host/pci/sriov.ts';
import { DriverRecords, RefusedError, executePlan, planBind } from '../../src/host/pci/vfio.ts';

test('sriov: 0 -> 3 writes 3; 3 -> 2 goes through 0; same count writes nothing', () => {
  const k = standardMachine();
  try {
    const host = k.host();
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 3));
    assert.deepEqual(k.vfs('0000:01:00.0'), ['0000:01:10.0', '0000:01:10.2', '0000:01:10.4']);
    assert.deepEqual(k.vfs('0000:01:00.0').map((v) => k.driverOf(v)), ['igbvf', 'igbvf', 'igbvf']);
    k.writes.length = 0;
    const p = planNumVfs(host, '0000:01:00.0', 2);
    assert.deepEqual(p.steps.map((s) => s.value), ['0', '2']);
    executeNumVfs(host, p);
    assert.deepEqual(k.writes, [
      { file: 'bus/pci/devices/0000:01:00.0/sriov_numvfs', value: '0' },
      { file: 'bus/pci/devices/0000:01:00.0/sriov_numvfs', value: '2' },
    ]);
    assert.deepEqual(k.vfs('0000:01:00.0'), ['0000:01:10.0', '0000:01:10.2']);
    assert.deepEqual(planNumVfs(host, 'enp1s0', 2).steps, []);
  } finally { k.cleanup(); }
});

test('sriov: bounds, non-SR-IOV devices and VFs bound to vfio-pci are refused by name', async () => {
  const k = standardMachine({ vfio: true });
  const st = makeTempDir('sriov-state-');
  try {
    const host = k.host();
    assert.throws(() => planNumVfs(host, 'enp1s0', 8), (e: Error) => e instanceof RefusedError && /0000:01:00\.0 supports 0 to 7 VFs, not 8/.test(e.message));
    assert.throws(() => planNumVfs(host, 'eno1', 1), /0000:00:19\.0 \(eno1, .*\) is not SR-IOV capable/);
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 2));
    const records = new DriverRecords(st.path);
    await executePlan(host, await planBind(host, '0000:01:10.2'), records, 'test');
    const before = k.snapshot();
    assert.throws(() => planNumVfs(host, 'enp1s0', 0), /VF 1 \(0000:01:10\.2\) is bound to vfio-pci .*qnet host vfio unbind/);
    assert.throws(() => planNumVfs(host, 'enp1s0', 4), /VF 1 \(0000:01:10\.2\) is bound to vfio-pci/);
    assert.equal(k.snapshot(), before);
  } finally { k.cleanup(); st.remove(); }
});

test('vf: MAC, VLAN, QoS, spoofchk and trust go through the PF as ip link set PF vf N ...; read back', async () => {
  const k = standardMachine();
  try {
    const host = k.host();
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 2));
    const r = await setVf(host, '0000:01:00.0', 1, { mac: '52:54:00:AA:BB:01', vlan: 42, qos: 3, spoofchk: true, trust: false });
    assert.deepEqual(r.args, ['link', 'set', 'dev', 'enp1s0', 'vf', '1', 'mac', '52:54:00:aa:bb:01', 'vlan', '42', 'qos', '3', 'spoofchk', 'on', 'trust', 'off']);
    assert.deepEqual(k.ipCalls.find((c) => c[1] === 'set'), r.args);
    assert.deepEqual(r.state, { index: 1, bdf: '0000:01:10.2', driver: 'igbvf', mac: '52:54:00:aa:bb:01', vlan: 42, qos: 3, spoofchk: true, trust: false });
    const all = await readVfStates(host, '0000:01:00.0');
    assert.deepEqual(all.map((v) => [v.index, v.mac, v.vlan]), [[0, '00:00:00:00:00:00', 0], [1, '52:54:00:aa:bb:01', 42]]);
    // dry run: the request, not sent
    const calls = k.ipCalls.length;
    const d = await setVf(host, 'enp1s0', 0, { trust: true }, { dryRun: true });
    assert.deepEqual(d.args, ['link', 'set', 'dev', 'enp1s0', 'vf', '0', 'trust', 'on']);
    assert.equal(k.ipCalls.length, calls);
  } finally { k.cleanup(); }
});

test('vf: bad values and missing VFs are refused before anything is sent', async () => {
  const k = standardMachine();
  try {
    const host = k.host();
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 2));
    await assert.rejects(setVf(host, 'enp1s0', 2, { vlan: 5 }), /0000:01:00\.0 has 2 VFs \(0-1\), so there is no VF 2/);
    assert.throws(() => vfSetArgs('enp1s0', 0, { mac: '01:00:5e:00:00:01' }), /multicast MAC/);
    assert.throws(() => vfSetArgs('enp1s0', 0, { mac: 'nope' }), /'nope' is not a MAC address/);
    assert.throws(() => vfSetArgs('enp1s0', 0, { vlan: 4096 }), /VLAN 4096 is out of range 0-4095/);
    assert.throws(() => vfSetArgs('enp1s0', 0, { qos: 2 }), /--qos .* give --vlan too/);
    assert.throws(() => vfSetArgs('enp1s0', 0, {}), /nothing to set/);
    assert.equal(k.ipCalls.filter((c) => c[1] === 'set').length, 0);
  } finally { k.cleanup(); }
});
