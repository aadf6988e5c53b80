// qnet qemu adopt: tap and bridge netdevs move onto a qnet kernel network (seed 000 §2.3's
// -net tap,script=/etc/qemu-ifup and -net bridge,br=virbr0, seed 002's helper lines).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adopt } from '../../src/qemu/adopt.ts';

const BIN = '/opt/qnet/bin';

test('adopt: a tap with qemu-ifup scripts gets qnet-ifup/qnet-ifdown, the rest unchanged', () => {
  const r = adopt(['rhel7.img', '-m', '8G', '-net', 'nic', '-net', 'tap,ifname=tap1,script=/etc/qemu-ifup,downscript=/etc/qemu-ifdown,vhost=on'], { binDir: BIN, network: 'lab' });
  assert.equal(r.ok, true);
  assert.deepEqual(r.services, []);
  assert.deepEqual(r.args, ['rhel7.img', '-m', '8G', '-netdev', `tap,id=net0,ifname=tap1,vhost=on,script=${BIN}/qnet-ifup,downscript=${BIN}/qnet-ifdown`, '-device', 'e1000,netdev=net0']);
  assert.match(r.notes.join('\n'), /QNET_NET=lab/);
});

test('adopt: -netdev bridge gets qnet-bridge-helper; --network renames the bridge to the network', () => {
  const a = adopt(['-netdev', 'bridge,id=brdev0,br=virbr0,helper=/usr/lib/qemu/qemu-bridge-helper', '-device', 'e1000,netdev=brdev0'], { binDir: BIN });
  assert.deepEqual(a.args, ['-netdev', `bridge,id=brdev0,br=virbr0,helper=${BIN}/qnet-bridge-helper`, '-device', 'e1000,netdev=brdev0']);
  const b = adopt(['-net', 'nic', '-net', 'bridge,br=virbr0'], { binDir: BIN, network: 'lab' });
  assert.deepEqual(b.args, ['-netdev', `bridge,id=net0,br=lab,helper=${BIN}/qnet-bridge-helper`, '-device', 'e1000,netdev=net0']);
  assert.match(b.notes.join('\n'), /allow: lists the user QEMU runs as/);
});

test('adopt: a tap with helper= uses qnet\'s helper; fd= taps are left alone', () => {
  const a = adopt(['-netdev', 'tap,id=t0,helper=/usr/lib/qemu/qemu-bridge-helper', '-device', 'virtio-net-pci,netdev=t0'], { binDir: BIN });
  assert.deepEqual(a.args, ['-netdev', `tap,id=t0,br=br0,helper=${BIN}/qnet-bridge-helper`, '-device', 'virtio-net-pci,netdev=t0']);
  const b = adopt(['-netdev', 'tap,id=t0,fd=3', '-device', 'virtio-net-pci,netdev=t0'], { binDir: BIN });
  assert.deepEqual(b.args, ['-netdev', 'tap,id=t0,fd=3', '-device', 'virtio-net-pci,netdev=t0']);
  assert.match(b.notes.join('\n'), /left tap netdev t0 alone/);
});
