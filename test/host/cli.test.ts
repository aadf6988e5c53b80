// `qnet host ...` and `qnet doctor` on fixture trees: in-process against the fake kernel (so
// the writes happen and are checked), and as child processes with --sysfs DIR (what a user
// types), the latter with a stand-in for `ip` (QNET_IP) since a fixture has no kernel behind it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { standardMachine, type FakeKernel } from './fake-kernel.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { main as hostMain } from '../../src/cli/host.ts';
import { main as doctorMain, CHECKS, pciCheck } from '../../src/cli/doctor.ts';
import { pciDoctorChecks } from '../../src/host/pci/doctor-checks.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const QNET = path.join(REPO, 'bin', 'qnet.js');

async function run(k: FakeKernel, state: string, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const [sub, ...rest] = argv;
  const code = sub === 'doctor'
    ? await doctorMain(rest, { host: k.host(), out: (s) => { out += s; }, err: (s) => { err += s; } })
    : await hostMain([...argv, '--state-dir', state], { host: k.host(), out: (s) => { out += s; }, err: (s) => { err += s; } });
  return { code, out: out.replaceAll(k.sys, '/sys').replaceAll(k.dev, '/dev'), err: err.replaceAll(k.sys, '/sys') };
}

function qnet(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [QNET, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (e, stdout, stderr) => {
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, out: stdout, err: stderr });
    });
  });
}

test('qnet host: sriov, vf, vfio bind/unbind through the CLI on a fake kernel', async () => {
  const k = standardMachine({ vfio: true });
  const st = makeTempDir('host-cli-');
  try {
    let r = await run(k, st.path, 'sriov', 'enp1s0', '--vfs', '2');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, '0000:01:00.0: 0 -> 2 VFs: 0=0000:01:10.0 1=0000:01:10.2\n');
    r = await run(k, st.path, 'sriov', 'enp1s0', '--vfs', '3', '--dry-run');
    assert.equal(r.out, [
      '# qnet host sriov 0000:01:00.0 --vfs 3 would run:',
      "echo 0 > /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs    # remove 0000:01:00.0's 2 VFs (the kernel changes a non-zero count only through 0)",
      'echo 3 > /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs    # create 3 VFs on 0000:01:00.0', '',
    ].join('\n'));
    r = await run(k, st.path, 'vf', 'enp1s0', '0', '--mac', '52:54:00:aa:bb:01', '--vlan', '42', '--spoofchk', 'on', '--trust', 'off');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, '0000:01:00.0 VF 0 (0000:01:10.0, igbvf): mac 52:54:00:aa:bb:01, vlan 42, spoofchk on, trust off\n');
    r = await run(k, st.path, 'vf', 'enp1s0');
    assert.equal(r.out.split('\n')[1], '0000:01:00.0 VF 1 (0000:01:10.2, igbvf): mac 00:00:00:00:00:00, vlan none, spoofchk on, trust off');
    r = await run(k, st.path, 'vf', 'enp1s0', '0', '--trust', 'maybe');
    assert.equal(r.code, 2);
    assert.match(r.err, /--trust takes on or off, not 'maybe'/);

    const before = k.writes.length;
    r = await run(k, st.path, 'vfio', 'bind', '01:10.0', '--dry-run');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, [
      '# qnet host vfio bind 0000:01:10.0 would run:',
      'echo vfio-pci > /sys/bus/pci/devices/0000:01:10.0/driver_override    # only vfio-pci may bind 0000:01:10.0',
      'echo 0000:01:10.0 > /sys/bus/pci/drivers/igbvf/unbind    # igbvf lets go of 0000:01:10.0',
      'echo 0000:01:10.0 > /sys/bus/pci/drivers_probe    # the kernel binds 0000:01:10.0 to vfio-pci',
      `# and remember 0000:01:10.0's driver igbvf in ${st.path}/vfio`, '',
    ].join('\n'));
    assert.equal(k.writes.length, before, '--dry-run writes nothing');
    r = await run(k, st.path, 'vfio', 'bind', '01:10.0');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, '0000:01:10.0: igbvf -> vfio-pci (IOMMU group 5, /dev/vfio/5); QEMU: -device vfio-pci,host=0000:01:10.0\n');
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(st.path, 'vfio', '0000:01:10.0.json'), 'utf8')).driver, 'igbvf');
    r = await run(k, st.path, 'vfio', 'unbind', '0000:01:10.0');
    assert.equal(r.out, '0000:01:10.0: vfio-pci -> igbvf (enp1s0v0)\n');
    assert.equal(k.driverOf('0000:01:10.0'), 'igbvf');

    // a refusal: exit 3, the blocking device named, nothing written
    const n = k.writes.length;
    r = await run(k, st.path, 'vfio', 'bind', '0000:02:00.1');
    assert.equal(r.code, 3);
    assert.match(r.err, /^qnet host vfio: refused: IOMMU group 4 of 0000:02:00\.1 also holds 0000:02:00\.0 \(enp2s0f0, .*driver e1000e\), bound to a host driver; .*--group/);
    assert.equal(k.writes.length, n);
  } finally { k.cleanup(); st.remove(); }
});

test('qnet host devices: the table, the groups, and what stands in the way', async () => {
  const k = standardMachine({ vfio: true });
  const st = makeTempDir('host-cli-');
  try {
    await run(k, st.path, 'sriov', 'enp1s0', '--vfs', '1');
    const r = await run(k, st.path, 'devices');
    assert.equal(r.code, 0, r.err);
    const lines = r.out.split('\n');
    assert.match(lines[0], /^ADDRESS +DEVICE +DRIVER +GROUP +NETDEV +MAC +LINK +NUMA +SR-IOV +ASSIGNABLE$/);
    assert.match(r.out, /\n0000:01:00\.0 .* igb +3 +enp1s0 +52:54:00:12:34:56 +down +0 +PF 1\/7 VFs +no\n/);
    assert.match(r.out, /\n0000:01:10\.0 .* igbvf +5 +enp1s0v0 +02:00:00:00:01:01 +down +0 +VF 0 of 0000:01:00\.0 +after vfio bind\n/);
    assert.match(r.out, /\nIOMMU groups:\n  2: 0000:00:19\.0 \(e1000e\)\n  3: 0000:01:00\.0 \(igb\)\n  4: 0000:02:00\.0 \(e1000e\), 0000:02:00\.1 \(e1000e\)\n  5: 0000:01:10\.0 \(igbvf\)\n/);
    assert.match(r.out, /\n  0000:00:19\.0: refusing to take 0000:00:19\.0 from the host: 0000:00:19\.0: eno1 has the address 192\.168\.1\.5\/24 in use/);
    assert.match(r.out, /\n  0000:01:00\.0: refusing .* has 1 VFs enabled/);
    const j = JSON.parse((await run(k, st.path, 'devices', '--json')).out);
    assert.equal(j.iommu, true);
    assert.equal(j.vfioLoaded, true);
    assert.deepEqual(j.devices.find((d: { bdf: string }) => d.bdf === '0000:01:10.0').assignable, { ready: false, bindable: true, reason: 'qnet host vfio bind 0000:01:10.0' });
  } finally { k.cleanup(); st.remove(); }
});

test('qnet doctor: a host ready for assignment, and one without an IOMMU', async () => {
  const k = standardMachine({ vfio: true });
  const bare = standardMachine({ iommu: false });
  try {
    k.addDevice({ bdf: '0000:05:00.0', vendor: '8086', device: '1521', class: '020000', driver: 'igb', netdev: 'enp5s0', group: 9, sriov: { total: 7, vfDevice: '1520', offset: 0x80, stride: 4, vfDriver: 'igbvf' } });
    const f = pciDoctorChecks(k.host());
    assert.deepEqual(f.map((x) => [x.check, x.status]), [['iommu', 'ok'], ['iommu-cmdline', 'ok'], ['irq-remapping', 'ok'], ['vfio', 'ok'], ['sriov', 'ok'], ['nic-groups', 'info']]);
    assert.equal(f[0].summary, 'IOMMU (VT-d / AMD-Vi): on: dmar0, 6 IOMMU groups');
    assert.match(f[4].summary, /^SR-IOV NICs: enp1s0 \(0000:01:00\.0, .*igb\): 0 of 7 VFs; enp5s0 \(0000:05:00\.0, .*\): 0 of 7 VFs$/);
    assert.match(f[5].summary, /0000:02:00\.0 shares group 4 with 0000:02:00\.1 \(e1000e, a host driver\)/);

    // the command's report: the PCI check is one of its checks (after the kernel-network ones)
    assert.deepEqual(CHECKS.filter((c) => c.id === 'pci').length, 1);
    assert.notEqual(CHECKS.findIndex((c) => c.id === 'tun'), -1);
    let out = '';
    const code = await doctorMain([], { host: bare.host(), checks: [pciCheck()], out: (s) => { out += s; } });
    assert.equal(code, 1);
    assert.match(out, /^FAIL  IOMMU \(VT-d \/ AMD-Vi\): off: no IOMMU units in \/sys\/class\/iommu, no IOMMU groups\n +fix: enable VT-d/);
    assert.match(out, /\nWARN  vfio modules: not loaded: vfio, vfio_iommu_type1, vfio_pci; no vfio-pci driver; no .*\/dev\/vfio\/vfio\n/);
    assert.match(out, /\n1 problem, 1 warning\n$/);

    // in the whole report, without a hostdev network (nor a tree named), a missing IOMMU warns
    const st = makeTempDir('doctor-cfg-');
    try {
      const plain = { checks: [pciCheck(() => bare.host())], out: (s: string) => { out += s; } };
      out = '';
      assert.equal(await doctorMain([], plain), 0);
      assert.match(out, /^WARN  IOMMU \(VT-d \/ AMD-Vi\): off: .*\n +a warning, not a failure: no hostdev network is configured/);
      assert.match(out, /\n0 problems, 2 warnings\n$/);
      const conf = path.join(st.path, 'qnet.yaml');
      fs.writeFileSync(conf, `stateDir: ${st.path}/state\nruntimeDir: ${st.path}/run\nnetworks:\n  - name: sriov\n    mode: hostdev\n    pf: enp1s0\n`);
      out = '';
      assert.equal(await doctorMain(['-c', conf], plain), 1);
      assert.match(out, /^FAIL  IOMMU/);
    } finally { st.remove(); }
  } finally { k.cleanup(); bare.cleanup(); }
});

test('qnet host as a command with --sysfs DIR (and QNET_IP standing in for ip)', async () => {
  const k = standardMachine({ vfio: true });
  const st = makeTempDir('host-cli-');
  try {
    const ipState = path.join(st.path, 'ip.json');
    k.saveIpState(ipState);
    const env = { QNET_IP: path.join(REPO, 'test', 'host', 'fake-ip.mjs'), QNET_FAKE_IP_STATE: ipState };
    const dirs = ['--sysfs', k.sys, '--procfs', k.proc, '--devfs', k.dev, '--state-dir', st.path];
    let r = await qnet(['host', 'devices', '--json', ...dirs], env);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out).devices.map((d: { bdf: string; driver: string }) => `${d.bdf} ${d.driver}`), ['0000:00:19.0 e1000e', '0000:01:00.0 igb', '0000:02:00.0 e1000e', '0000:02:00.1 e1000e']);
    fs.rmSync(`${ipState}.calls`, { force: true });
    r = await qnet(['host', 'vfio', 'bind', 'enp1s0', '--dry-run', ...dirs], env);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`^# qnet host vfio bind 0000:01:00\\.0 would run:\\necho vfio-pci > ${k.sys}/bus/pci/devices/0000:01:00\\.0/driver_override`));
    assert.deepEqual(fs.readFileSync(`${ipState}.calls`, 'utf8').trim().split('\n').map((l) => JSON.parse(l).join(' ')), ['-json route show default', '-json -6 route show default', '-json addr show dev enp1s0']);
    r = await qnet(['host', 'vfio', 'bind', 'eno1', ...dirs], env);
    assert.equal(r.code, 3);
    assert.match(r.err, /refused: refusing to take 0000:00:19\.0 from the host: .*eno1 carries the host's default route \(via 192\.168\.1\.1\)/);
    // without a stand-in, qnet does not run the machine's ip for a tree that is not the machine's
    r = await qnet(['host', 'vfio', 'bind', 'enp1s0', '--dry-run', ...dirs], { QNET_IP: '' });
    assert.equal(r.code, 1);
    assert.match(r.err, /cannot run 'ip -json route show default' for the sysfs tree .*: it is not this machine's kernel \(set QNET_IP/);
  } finally { k.cleanup(); st.remove(); }
});

test('qnet doctor --sysfs DIR: the device-assignment findings join the kernel-network ones in one report', async () => {
  const k = standardMachine({ vfio: true });
  try {
    const r = await qnet(['doctor', '--json', '--acl', '/nonexistent.conf', '--sysfs', k.sys, '--procfs', k.proc, '--devfs', k.dev]);
    assert.ok(r.code === 0 || r.code === 1, r.err);
    const f = JSON.parse(r.out) as { check: string; status: string; summary: string }[];
    const ids = f.map((x) => x.check);
    for (const id of ['tun', 'kvm', 'forward', 'iommu', 'irq-remapping', 'vfio', 'sriov']) assert.ok(ids.includes(id), `${id} in ${ids.join(' ')}`);
    assert.ok(ids.indexOf('tun') < ids.indexOf('iommu'), 'kernel-network checks first, then device assignment');
    assert.equal(f.find((x) => x.check === 'iommu')?.summary, 'IOMMU (VT-d / AMD-Vi): on: dmar0, 5 IOMMU groups');
  } finally { k.cleanup(); }
});
