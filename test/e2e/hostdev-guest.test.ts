// Device assignment on a real kernel: a TCG guest running Debian's generic kernel on QEMU's
// emulated SR-IOV NIC (igb: an 82576, 7 VFs) behind an emulated Intel IOMMU with interrupt
// remapping. Inside it, qnet (this checkout, through the host's root shared read-only) creates
// VFs, sets a VF's MAC and VLAN through the PF, binds the VF to vfio-pci, a QEMU inside the
// guest opens it (paused; QMP query-pci shows it), unbind gives it back to igbvf; then a VF
// pool network hands VFs to two VMs started with `qnet run`, at once, and the first VM's VF
// is free again (igbvf, settings restored) when its QEMU quits.
//
// One guest boot does it all (test/helpers/sriov-driver.ts, reporting QNET lines): 75-90 s on
// a quiet 2-core machine, 2-4 minutes when other work competes for the cores (the step times
// are printed as test diagnostics). The test bed (testbed/build-sriov-guest.sh) is prepared by
// scripts/ensure-test-deps.sh; without it the test skips and says why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TEST_EXIT_MARKER, parseResults } from '../helpers/guest.ts';
import { bootSriovGuest, sriovBed } from '../helpers/sriov-guest.ts';
import { repoRoot } from '../helpers/user-net.ts';
import { LAYOUT } from '../helpers/sysfs-layout.ts';
import { FakeKernel } from '../host/fake-kernel.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const bed = await sriovBed();

test('device assignment on a real kernel: SR-IOV VFs, vfio-pci, QEMU opening a VF, a VF pool for two VMs', { skip: 'skip' in bed ? bed.skip : false, timeout: 1_500_000 }, async (t) => {
  if ('skip' in bed) return;
  t.diagnostic(`test bed: ${bed.version}; guest kernel ${bed.kernel}`);
  // tsx's transform cache from this host (same sources, same keys), read-only: spares the node
  // processes in the guest most of their TypeScript compiling, which is slow under TCG (tsx
  // ignores failed cache writes)
  const tsxCache = path.join(os.tmpdir(), `tsx-${process.getuid?.() ?? 0}`);
  // the guest mounts tmpfs over these (build-sriov-guest.sh); a checkout under one (a CI clone
  // in /tmp, say) is reached through the plain view of the host's root instead
  const hidden = ['/tmp/', '/run/', '/var/tmp/', '/var/lib/', '/root/'].some((d) => `${repoRoot}/`.startsWith(d));
  const repoInGuest = hidden ? `/run/hostroot${repoRoot}` : repoRoot;
  const g = await bootSriovGuest(bed, [
    `[ -d '/run/hostroot${tsxCache}' ] && mkdir -p /tmp/tsx-0 && mount --bind -o ro '/run/hostroot${tsxCache}' /tmp/tsx-0`,
    `cd '${repoInGuest}' && node --import tsx test/helpers/sriov-driver.ts`,
    'echo "QNET driver-rc $?"',
  ].join('\n') + '\n');
  try {
    await g.waitFor(TEST_EXIT_MARKER, 1_400_000);
  } finally {
    await g.kill();
  }
  const r = parseResults(g.output);
  t.diagnostic(`guest: ready after ${((g.bootMs ?? 0) / 1000).toFixed(1)} s; steps (s since the driver started): ${parseLines(g.output, 'time').map(([s, at]) => `${s} ${at}`).join(', ')}`);
  const diag = `\n--- guest console ---\n${g.output.slice(-6000)}`;
  const v = (k: string): string[] => { const x = r.get(k); assert.ok(x, `no QNET ${k} line${diag}`); return x; };
  assert.deepEqual(v('driver'), ['done'], diag);
  assert.deepEqual(v('driver-rc'), ['0'], diag);

  // the PF and the host's readiness
  assert.deepEqual(v('pf'), ['0000:01:00.0', 'eth0', 'igb', '7', 'true']);
  assert.deepEqual(v('pf-name'), ['"82576', 'Gigabit', 'Network', 'Connection"'], 'the name comes from pci.ids');
  const doctor = parseLines(g.output, 'doctor');
  assert.deepEqual(Object.fromEntries(doctor.map(([c, s]) => [c, s])), { iommu: 'ok', 'iommu-cmdline': 'info', 'irq-remapping': 'ok', vfio: 'warn', sriov: 'ok' });

  // VFs, and VF 0's settings as the PF reports them (read with ip, not qnet)
  assert.equal(v('sriov')[0], '0');
  assert.deepEqual(v('vfs'), ['0000:01:10.0', '0000:01:10.2', '0000:01:10.4']);
  assert.deepEqual(v('vf-drivers'), ['igbvf', 'igbvf', 'igbvf']);
  assert.equal(v('vf-set')[0], '0');

  // the fixture trees are laid out as this kernel lays out sysfs: the same symlink targets for
  // the same topology (group numbers aside)
  const norm = (t: string) => t.replace(/iommu_groups\/\d+/g, 'iommu_groups/N');
  const real = parseLines(g.output, 'link').map(([rel, target]) => `${norm(rel)} -> ${norm(target)}`);
  assert.equal(real.length, 18);
  assert.ok(!real.some((l) => l.endsWith('(none)')), real.join('\n'));
  const k = new FakeKernel({ vfio: false });
  try {
    k.addDevice({ bdf: '0000:00:00.0', vendor: '8086', device: '29c0', class: '060000', group: 0 });
    k.addDevice({ bdf: '0000:00:01.0', vendor: '1b36', device: '000c', class: '060400', driver: 'pcieport', group: 1 });
    k.addDevice({ bdf: '0000:01:00.0', parent: '0000:00:01.0', vendor: '8086', device: '10c9', class: '020000', driver: 'igb', netdev: 'eth0', group: 4, sriov: { total: 7, vfDevice: '10ca', offset: 0x80, stride: 2, vfDriver: 'igbvf' } });
    k.host().write('bus/pci/devices/0000:01:00.0/sriov_numvfs', '3');
    const group = fs.readlinkSync(`${k.sys}/bus/pci/devices/0000:01:10.0/iommu_group`).split('/').pop()!;
    const fixture = LAYOUT('0000:01:00.0', '0000:01:10.0', 'eth0', group).map((rel) => `${norm(rel)} -> ${norm(fs.readlinkSync(`${k.sys}/${rel}`))}`);
    assert.deepEqual(fixture, real);
  } finally { k.cleanup(); }
  assert.deepEqual(v('vf0-ip'), ['52:54:00:aa:bb:01', '42', 'true', 'false']);

  // vfio-pci: loaded by qnet, the VF bound, its group's node there, the driver remembered
  assert.deepEqual(v('vfio-before'), ['false']);
  assert.match(v('lint-before').join(' '), /on this host: 0000:01:10\.0 .*is bound to igbvf, not vfio-pci/);
  assert.deepEqual(v('bind').slice(0, 2), ['0', 'vfio-pci']);
  assert.equal(v('group')[1], 'true');
  assert.equal(v('group')[2], '0000:01:10.0', 'the VF is alone in its IOMMU group');
  assert.deepEqual(v('remembered'), ['igbvf']);
  assert.match(v('lint-after').join(' '), /on this host: 0000:01:10\.0 .*is bound to vfio-pci, IOMMU group \d+ is viable and \/dev\/vfio\/\d+ is accessible: ready/);

  // QEMU inside the guest opened the VF (82576 VF: 8086:10ca), and unbind restored igbvf
  assert.deepEqual(v('qemu-pci'), ['hd0', '8086', '10ca']);
  assert.deepEqual(v('qemu-exit'), ['0']);
  assert.deepEqual(v('unbind').slice(0, 2), ['0', 'igbvf']);
  assert.deepEqual(v('unbind-record'), ['false']);

  // the VF pool: vm1 and vm2 at once on different VFs, with their MACs and the pool's VLAN
  assert.deepEqual(v('pool-start'), ['3', '3']);
  const [vf1, idx1, drv1, rec1, mac1] = v('vm1-vf');
  assert.equal(drv1, 'vfio-pci');
  assert.equal(rec1, vf1);
  assert.deepEqual(v('vm1-pci'), ['8086', '10ca']);
  assert.deepEqual(v('vm1-ip'), [mac1, '100']);
  const [vf2, , drv2, , mac2] = v('vm2-vf');
  assert.notEqual(vf2, vf1, 'the second VM gets another VF');
  assert.equal(drv2, 'vfio-pci');
  assert.notEqual(mac2, mac1);
  assert.deepEqual(v('vm2-pci'), ['8086', '10ca']);
  assert.deepEqual(v('vm2-ip'), [mac2, '100']);
  assert.equal(v('pool-two')[0], '1');
  // vm1 quit: its VF (VF 0) is free again, back on igbvf, with the MAC and VLAN it had before
  // the pool took it (those `qnet host vf` gave it above)
  assert.equal(idx1, '0');
  assert.deepEqual(v('vm1-run-exit'), ['0']);
  assert.deepEqual(v('vm1-vf-after'), ['free', 'igbvf', '52:54:00:aa:bb:01', '42']);
  assert.deepEqual(v('vm2-run-exit'), ['0']);
  // all back: free, on igbvf, each with the settings it had before the pool (VF 0's from
  // `qnet host vf`, the others' none: igb takes the zero MAC as "no administrative MAC")
  assert.deepEqual(v('pool-end'), ['3', 'igbvf,igbvf,igbvf', '52:54:00:aa:bb:01/42,00:00:00:00:00:00/0,00:00:00:00:00:00/0']);
  assert.deepEqual(v('up-exit'), ['0']);
});

/** every `QNET key ...` line's values, in order */
function parseLines(output: string, key: string): string[][] {
  return output.split('\n').filter((l) => l.startsWith(`QNET ${key} `)).map((l) => l.slice(`QNET ${key} `.length).trim().split(/\s+/));
}
