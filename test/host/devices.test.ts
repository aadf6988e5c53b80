// Listing PCI devices from a fixture sysfs tree: identity, names, driver, IOMMU group members,
// interfaces, NUMA, SR-IOV relations; and pci.ids parsing (a fixture file and the system's).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { standardMachine } from './fake-kernel.ts';
import { PciIds, systemPciIds, PCI_IDS_PATHS } from '../../src/host/pci/pciids.ts';
import { listDevices, readDevice, resolveDevice } from '../../src/host/pci/devices.ts';
import { normalizeBdf } from '../../src/host/pci/sysfs.ts';

const IDS = new PciIds(`# test pci.ids
8086  Intel Corporation
\t10c9  82576 Gigabit Network Connection
\t\t8086 0000  Gigabit ET Dual Port Server Adapter
\t10ca  82576 Virtual Function
\t10d3  82574L Gigabit Network Connection
1b36  Red Hat, Inc.
\t000c  QEMU PCIe Root port
C 02  Network controller
\t00  Ethernet controller
C 06  Bridge
\t04  PCI bridge
\t\t00  Normal decode
`);

test('pci.ids: vendor, device, subsystem and class names', () => {
  assert.equal(IDS.vendor('8086'), 'Intel Corporation');
  assert.equal(IDS.device('8086', '10CA'), '82576 Virtual Function');
  assert.equal(IDS.subsystem('8086', '10c9', '8086', '0000'), 'Gigabit ET Dual Port Server Adapter');
  assert.equal(IDS.className('020000'), 'Ethernet controller');
  assert.equal(IDS.className('0x060400'), 'PCI bridge');
  assert.equal(IDS.className('028000'), 'Network controller');
  assert.equal(IDS.vendor('abcd'), undefined);
});

const systemIds = PCI_IDS_PATHS.find((f) => fs.existsSync(f));
test('pci.ids: the system database (Debian pci.ids) names the 82576 and its VF', { skip: systemIds ? false : `no pci.ids in ${PCI_IDS_PATHS.join(', ')} (apt-get install pci.ids)` }, () => {
  const ids = systemPciIds();
  assert.equal(ids.file, systemIds);
  assert.equal(ids.vendor('8086'), 'Intel Corporation');
  assert.equal(ids.device('8086', '10c9'), '82576 Gigabit Network Connection');
  assert.equal(ids.device('8086', '10ca'), '82576 Virtual Function');
  assert.equal(ids.className('020000'), 'Ethernet controller');
});

test('normalizeBdf: short and long forms, bad ones', () => {
  assert.equal(normalizeBdf('01:10.0'), '0000:01:10.0');
  assert.equal(normalizeBdf('0000:03:00.3'), '0000:03:00.3');
  assert.equal(normalizeBdf('0000:0A:1F.7'), '0000:0a:1f.7');
  assert.equal(normalizeBdf('01:20.0'), undefined); // slot > 0x1f
  assert.equal(normalizeBdf('01:10.8'), undefined);
  assert.equal(normalizeBdf('eth0'), undefined);
});

test('devices: network controllers with names, driver, group members, interface, NUMA, SR-IOV', () => {
  const k = standardMachine();
  try {
    const host = k.host();
    const devs = listDevices(host, { ids: IDS });
    assert.deepEqual(devs.map((d) => d.bdf), ['0000:00:19.0', '0000:01:00.0', '0000:02:00.0', '0000:02:00.1']);
    const pf = devs[1];
    assert.deepEqual(pf, {
      bdf: '0000:01:00.0', vendorId: '8086', deviceId: '10c9', subsystemVendorId: '8086', subsystemDeviceId: '0000', classCode: '020000',
      vendor: 'Intel Corporation', device: '82576 Gigabit Network Connection', subsystem: 'Gigabit ET Dual Port Server Adapter', className: 'Ethernet controller',
      driver: 'igb', iommuGroup: 3, groupMembers: [{ bdf: '0000:01:00.0', classCode: '020000', bridge: false, driver: 'igb' }],
      netdevs: [{ name: 'enp1s0', mac: '52:54:00:12:34:56', state: 'down' }], numaNode: 0,
      sriov: { totalVfs: 7, numVfs: 0, vfs: [] },
    });
    assert.deepEqual(devs[2].groupMembers.map((m) => m.bdf), ['0000:02:00.0', '0000:02:00.1']);
    assert.equal(devs[0].netdevs[0].state, 'up');
    // --all adds the host bridge and the root port
    assert.deepEqual(listDevices(host, { all: true, ids: IDS }).map((d) => d.bdf), ['0000:00:00.0', '0000:00:01.0', '0000:00:19.0', '0000:01:00.0', '0000:02:00.0', '0000:02:00.1']);
  } finally { k.cleanup(); }
});

test('devices: VFs know their PF and index, the PF lists its VFs', () => {
  const k = standardMachine();
  try {
    const host = k.host();
    host.write('bus/pci/devices/0000:01:00.0/sriov_numvfs', '2');
    const pf = readDevice(host, '0000:01:00.0', IDS);
    assert.deepEqual(pf.sriov, { totalVfs: 7, numVfs: 2, vfs: [{ index: 0, bdf: '0000:01:10.0' }, { index: 1, bdf: '0000:01:10.2' }] });
    const vf = readDevice(host, '0000:01:10.2', IDS);
    assert.deepEqual(vf.physfn, { pf: '0000:01:00.0', index: 1 });
    assert.equal(vf.device, '82576 Virtual Function');
    assert.equal(vf.driver, 'igbvf');
    assert.equal(vf.iommuGroup, 6);
    assert.equal(vf.sriov, undefined);
    assert.deepEqual(vf.netdevs.map((n) => n.name), ['enp1s0v1']);
  } finally { k.cleanup(); }
});

test('resolveDevice: BDF, short BDF, interface name; errors name what exists', () => {
  const k = standardMachine();
  try {
    const host = k.host();
    assert.equal(resolveDevice(host, '01:00.0'), '0000:01:00.0');
    assert.equal(resolveDevice(host, 'enp1s0'), '0000:01:00.0');
    assert.throws(() => resolveDevice(host, '0000:09:00.0'), /no PCI device 0000:09:00.0/);
    assert.throws(() => resolveDevice(host, 'wlan0'), /'wlan0' is neither a PCI address .* \(PCI interfaces: eno1, enp1s0, enp2s0f0, enp2s0f1\)/);
  } finally { k.cleanup(); }
});
