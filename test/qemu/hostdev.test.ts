// -device vfio-pci against a host (a fake kernel): lint's host notes and convert --to libvirt
// writing a VF as <interface type='hostdev'> with the MAC and VLAN its PF reports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyze } from '../../src/qemu/analyze.ts';
import { convert } from '../../src/qemu/convert.ts';
import { lint } from '../../src/qemu/lint.ts';
import { hostdevFacts, hostdevNotes } from '../../src/qemu/hostdev.ts';
import { standardMachine } from '../host/fake-kernel.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { DriverRecords, executePlan, planBind } from '../../src/host/pci/vfio.ts';
import { executeNumVfs, planNumVfs, setVf } from '../../src/host/pci/sriov.ts';

test('lint: vfio-pci without -nic none warns that QEMU adds its default NIC too', () => {
  assert.ok(lint(['-device', 'vfio-pci,host=01:10.0']).diagnostics.some((d) => d.code === 'vfio-default-net' && d.severity === 'warning'));
  assert.ok(!lint(['-nic', 'none', '-device', 'vfio-pci,host=01:10.0']).diagnostics.some((d) => d.code === 'vfio-default-net' || d.code === 'default-net'));
  assert.ok(!lint(['-nodefaults', '-device', 'vfio-pci,host=01:10.0']).diagnostics.some((d) => d.code === 'vfio-default-net'));
});

test('lint host notes: not on vfio-pci, group not viable, /dev/vfio/N, ready', async () => {
  const k = standardMachine({ vfio: true });
  const st = makeTempDir('qemu-hostdev-');
  try {
    const host = k.host();
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 2));
    const notes = (args: string[]) => hostdevNotes(analyze(args), host).map((d) => `${d.severity}: ${d.message}${d.hint ? ` [${d.hint}]` : ''}`);
    const n1 = notes(['-nic', 'none', '-device', 'vfio-pci,host=01:10.0']);
    assert.equal(n1.length, 1);
    // (the device's name comes from the system's pci.ids, or is the IDs without it)
    assert.match(n1[0], /^warning: on this host: 0000:01:10\.0 \(enp1s0v0, .*, driver igbvf\), VF 0 of 0000:01:00\.0 is bound to igbvf, not vfio-pci, so QEMU cannot open it \[qnet host vfio bind 0000:01:10\.0\]$/);
    assert.match(notes(['-device', 'vfio-pci,host=0000:07:00.0'])[0], /there is no PCI device 0000:07:00\.0/);
    // bound (the pair of ports moved together), then one of them taken back by e1000e: not viable
    const records = new DriverRecords(st.path);
    await executePlan(host, await planBind(host, '0000:02:00.0', { group: true }), records, 'test');
    host.write('bus/pci/drivers/vfio-pci/unbind', '0000:02:00.1');
    host.write('bus/pci/devices/0000:02:00.1/driver_override', '\n');
    host.write('bus/pci/drivers/e1000e/bind', '0000:02:00.1');
    assert.match(notes(['-device', 'vfio-pci,host=02:00.0'])[0], /^warning: on this host: IOMMU group 4 of 0000:02:00\.0 is not viable: 0000:02:00\.1 \(enp2s0f1, .*driver e1000e\) is on a host driver \[qnet host vfio bind 0000:02:00\.0 --group\]$/);
    // ready: bound, viable, /dev/vfio/N there (root reads and writes it)
    await executePlan(host, await planBind(host, '0000:01:10.2'), records, 'test');
    assert.match(notes(['-device', 'vfio-pci,host=0000:01:10.2'])[0], /^note: on this host: 0000:01:10\.2 .*VF 1 of 0000:01:00\.0 is bound to vfio-pci, IOMMU group 6 is viable and .*\/dev\/vfio\/6 is accessible: ready$/);
    // a missing group node
    const fs = await import('node:fs');
    fs.rmSync(`${k.dev}/vfio/6`);
    assert.match(notes(['-device', 'vfio-pci,host=0000:01:10.2'])[0], /^warning: on this host: .*\/dev\/vfio\/6 does not exist: QEMU running as this user cannot open the device/);
  } finally { k.cleanup(); st.remove(); }
});

test('convert --to libvirt: a VF becomes <interface type=hostdev> with its MAC and VLAN; a PF stays <hostdev>', async () => {
  const k = standardMachine({ vfio: true });
  try {
    const host = k.host();
    executeNumVfs(host, planNumVfs(host, 'enp1s0', 1));
    await setVf(host, 'enp1s0', 0, { mac: '52:54:00:aa:bb:01', vlan: 42 });
    const args = ['-nic', 'none', '-device', 'vfio-pci,host=01:10.0,addr=05', '-device', 'vfio-pci,host=0000:02:00.0'];
    const facts = await hostdevFacts(analyze(args), host);
    assert.deepEqual([...facts], [['01:10.0', { vf: { pf: '0000:01:00.0', index: 0, mac: '52:54:00:aa:bb:01', vlan: 42 } }], ['0000:02:00.0', {}]]);
    const xml = convert(args, 'libvirt', { hostdevs: facts }).xml!;
    assert.equal(xml, [
      "<interface type='hostdev' managed='yes'>",
      '  <source>',
      "    <address type='pci' domain='0x0000' bus='0x01' slot='0x10' function='0x0'/>",
      '  </source>',
      "  <mac address='52:54:00:aa:bb:01'/>",
      '  <vlan>',
      "    <tag id='42'/>",
      '  </vlan>',
      "  <driver name='vfio'/>",
      "  <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>",
      '</interface>',
      "<hostdev mode='subsystem' type='pci' managed='yes'>",
      '  <source>',
      "    <address domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>",
      '  </source>',
      '</hostdev>',
      '',
    ].join('\n'));
    // without the host: both are plain <hostdev>
    assert.equal((convert(args, 'libvirt').xml!.match(/<hostdev /g) ?? []).length, 2);
  } finally { k.cleanup(); }
});
