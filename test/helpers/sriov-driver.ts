// Runs inside the SR-IOV test guest (test/e2e/hostdev-guest.test.ts), as root, on a real
// kernel with an emulated 82576 (igb) behind an emulated Intel IOMMU. It drives qnet the way a
// user would and reports each fact as a `QNET <key> <values...>` line for the host side to
// check; it checks nothing itself beyond what it needs to go on (the test asserts).
//
//   1. qnet host devices --json          finds the SR-IOV PF
//   2. qnet doctor's checks              IOMMU, interrupt remapping, ...
//   3. qnet host sriov PF --vfs 3        creates VFs (igbvf binds them)
//   4. qnet host vf PF 0 --mac --vlan    read back with `ip -json link show` (independently)
//   5. qnet host vfio bind VF0           (qnet loads vfio-pci itself) + qemu lint's host note
//   6. QEMU (the host's 7.2) opens it    -M q35 -S -device vfio-pci,host=VF0; QMP query-pci
//   7. qnet host vfio unbind VF0         igbvf again
//   8. a VF pool network: `qnet up` and two `qnet run` processes, both VMs at once on
//      different VFs, the first one's VF free again (driver and settings back) when its QEMU
//      quits, then the second's.
// The `qnet host` commands run in this process (their CLI entry, output captured); the daemon
// and `qnet run` are separate processes, as they are for a user. Every process started here is
// stopped here.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { main as hostMain } from '../../src/cli/host.ts';
import { main as qemuMain } from '../../src/cli/qemu.ts';
import { pciDoctorChecks } from '../../src/host/pci/doctor-checks.ts';
import { Host } from '../../src/host/pci/sysfs.ts';
import { QmpClient } from '../../src/qemu/qmp.ts';
import { ApiClient } from '../../src/daemon/client.ts';
import type { NetworkInfo, VmRecord } from '../../src/daemon/types.ts';
import { LAYOUT } from './sysfs-layout.ts';
import { waitFor } from './wait.ts';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const QNET = path.join(REPO, 'bin', 'qnet.js');
const say = (key: string, ...v: (string | number | boolean | null | undefined)[]): void => { process.stdout.write(`QNET ${key} ${v.map((x) => String(x ?? '-')).join(' ')}\n`); };
const t0 = Date.now();
/** how long the steps take (the test prints them as diagnostics) */
const mark = (step: string): void => say('time', step, ((Date.now() - t0) / 1000).toFixed(1), (fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]));
const children = new Set<ChildProcess>();
const logs: string[] = [];

async function cli(fn: typeof hostMain, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await fn(argv, { out: (s) => { out += s; }, err: (s) => { err += s; } });
  return { code, out, err };
}
async function qemuCli(argv: string[]): Promise<{ code: number; err: string }> {
  // qnet qemu writes to the process's stdout/stderr: capture them for the call
  let err = '';
  const orig = process.stderr.write.bind(process.stderr);
  (process.stderr as { write: unknown }).write = (s: string) => { err += s; return true; };
  try { return { code: await qemuMain(argv), err }; } finally { (process.stderr as { write: unknown }).write = orig; }
}
function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => execFile(cmd, args, { timeout: 60_000 }, (e, out, err) => (e ? reject(new Error(`${cmd} ${args.join(' ')}: ${err || e.message}`)) : resolve(out))));
}
const driverOf = (bdf: string): string => { try { return path.basename(fs.readlinkSync(`/sys/bus/pci/devices/${bdf}/driver`)); } catch { return 'none'; } };
async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 400_000): Promise<T> {
  return (await waitFor(fn, { what, timeoutMs: ms, intervalMs: 100 })) as T;
}
function start(name: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess & { output: () => string } {
  const c = spawn(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let buf = '';
  c.stdout!.on('data', (d: Buffer) => { buf += d.toString(); });
  c.stderr!.on('data', (d: Buffer) => { buf += d.toString(); });
  c.on('exit', () => { children.delete(c); logs.push(`--- ${name} (exit ${c.exitCode ?? c.signalCode}) ---\n${buf}`); });
  children.add(c);
  return Object.assign(c, { output: () => buf });
}
const exited = (c: ChildProcess): Promise<number | null> => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve(c.exitCode) : new Promise((r) => c.once('exit', (code) => r(code))));

async function qmpPci(sock: string): Promise<{ id: string; vendor: string; device: string }[]> {
  const q = await QmpClient.connect(sock, { timeoutMs: 30_000 });
  try {
    const buses = await q.execute<{ devices: { qdev_id: string; id: { vendor: number; device: number } }[] }[]>('query-pci');
    return buses.flatMap((b) => b.devices).map((d) => ({ id: d.qdev_id, vendor: d.id.vendor.toString(16), device: d.id.device.toString(16) }));
  } finally { q.close(); }
}
async function qmpQuit(sock: string): Promise<void> {
  const q = await QmpClient.connect(sock, { timeoutMs: 30_000 });
  try { await q.execute('quit').catch(() => {}); } finally { q.close(); }
}
async function vfinfo(ifname: string): Promise<{ vf: number; address: string; vlan_list?: { vlan?: number }[]; spoofchk?: boolean; trust?: boolean }[]> {
  return (JSON.parse(await sh('ip', ['-json', 'link', 'show', 'dev', ifname])) as { vfinfo_list?: [] }[])[0].vfinfo_list ?? [];
}
const INNER_QEMU = ['qemu-system-x86_64', '-M', 'q35', '-S', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-m', '64'];

async function main(): Promise<void> {
  // 1. the PF
  const devs = JSON.parse((await cli(hostMain, ['devices', '--json'])).out) as { iommu: boolean; devices: { bdf: string; driver?: string; sriov?: { totalVfs: number }; netdevs: { name: string }[]; device?: string }[] };
  const pf = devs.devices.find((d) => d.sriov)!;
  const ifname = pf.netdevs[0].name;
  say('pf', pf.bdf, ifname, pf.driver, pf.sriov!.totalVfs, devs.iommu);
  say('pf-name', JSON.stringify(pf.device ?? ''));

  mark('devices');
  // 2. doctor
  for (const f of pciDoctorChecks(new Host())) say('doctor', f.check, f.status);

  // 3. VFs
  const sr = await cli(hostMain, ['sriov', ifname, '--vfs', '3']);
  say('sriov', sr.code, JSON.stringify(sr.out.trim() || sr.err.trim()));
  const vfs = fs.readdirSync(`/sys/class/net/${ifname}/device`).filter((e) => /^virtfn\d$/.test(e)).sort()
    .map((e) => path.basename(fs.readlinkSync(`/sys/class/net/${ifname}/device/${e}`)));
  say('vfs', ...vfs);
  say('vf-drivers', ...vfs.map(driverOf));
  const vf0 = vfs[0];
  // the sysfs layout the fixture trees copy (test/host/fake-kernel.ts), as this kernel makes it
  const vfGroup = path.basename(fs.readlinkSync(`/sys/bus/pci/devices/${vf0}/iommu_group`));
  for (const rel of LAYOUT(pf.bdf, vf0, ifname, vfGroup)) {
    let target = '(none)';
    try { target = fs.readlinkSync(`/sys/${rel}`); } catch { /* missing */ }
    say('link', rel, target);
  }

  mark('vfs');
  // 4. VF 0's MAC and VLAN through the PF
  const vr = await cli(hostMain, ['vf', ifname, '0', '--mac', '52:54:00:aa:bb:01', '--vlan', '42', '--spoofchk', 'on', '--trust', 'off']);
  say('vf-set', vr.code, JSON.stringify(vr.out.trim() || vr.err.trim()));
  const i0 = (await vfinfo(ifname))[0];
  say('vf0-ip', i0.address, i0.vlan_list?.[0]?.vlan ?? 0, i0.spoofchk, i0.trust);

  // 5. bind VF 0 to vfio-pci (vfio-pci is not loaded yet: qnet loads it)
  say('vfio-before', fs.existsSync('/sys/bus/pci/drivers/vfio-pci'));
  const lintBefore = await qemuCli(['lint', '--', '-nic', 'none', '-device', `vfio-pci,host=${vf0}`]);
  say('lint-before', JSON.stringify(lintBefore.err.split('\n').find((l) => l.includes('on this host')) ?? ''));
  const b = await cli(hostMain, ['vfio', 'bind', vf0, '--state-dir', '/tmp/qnet-state']);
  say('bind', b.code, driverOf(vf0), JSON.stringify(b.out.trim() || b.err.trim()));
  const group = path.basename(fs.readlinkSync(`/sys/bus/pci/devices/${vf0}/iommu_group`));
  say('group', group, fs.existsSync(`/dev/vfio/${group}`), fs.readdirSync(`/sys/kernel/iommu_groups/${group}/devices`).join(','));
  const rec = JSON.parse(fs.readFileSync(`/tmp/qnet-state/vfio/${vf0}.json`, 'utf8')) as { driver: string };
  say('remembered', rec.driver);
  const lintAfter = await qemuCli(['lint', '--', '-nic', 'none', '-device', `vfio-pci,host=${vf0}`]);
  say('lint-after', JSON.stringify(lintAfter.err.split('\n').find((l) => l.includes('on this host')) ?? ''));

  mark('bind');
  // 6. QEMU opens it (paused: -S), QMP shows it
  const qsock = '/tmp/inner.qmp';
  const q = start('inner qemu', [...INNER_QEMU, '-device', `vfio-pci,host=${vf0},id=hd0`, '-qmp', `unix:${qsock},server=on,wait=off`]);
  await until('the inner QEMU\'s QMP socket', () => fs.existsSync(qsock) || (q.exitCode !== null ? Promise.reject(new Error(`QEMU exited: ${q.output()}`)) : undefined));
  const pci = await qmpPci(qsock);
  const hd = pci.find((d) => d.id === 'hd0');
  say('qemu-pci', hd?.id, hd?.vendor, hd?.device);
  await qmpQuit(qsock);
  say('qemu-exit', await exited(q));

  mark('qemu');
  // 7. give it back
  const u = await cli(hostMain, ['vfio', 'unbind', vf0, '--state-dir', '/tmp/qnet-state']);
  say('unbind', u.code, driverOf(vf0), JSON.stringify(u.out.trim() || u.err.trim()));
  say('unbind-record', fs.existsSync(`/tmp/qnet-state/vfio/${vf0}.json`));

  mark('unbind');
  // 8. a VF pool network: the daemon and qnet run as processes
  fs.writeFileSync('/tmp/qnet.yaml', `stateDir: /tmp/qs\nruntimeDir: /tmp/qr\nnetworks:\n  - name: sriov\n    mode: hostdev\n    pf: ${ifname}\n    vlan: 100\n`);
  const up = start('qnet up', [process.execPath, QNET, 'up', '-c', '/tmp/qnet.yaml']);
  const api = new ApiClient('/tmp/qr/api.sock');
  await until('qnet up', () => /control API on/.test(up.output()) || (up.exitCode !== null ? Promise.reject(new Error(`qnet up exited: ${up.output()}`)) : undefined));
  const pool = async () => (await api.get<NetworkInfo>('/v1/networks/sriov')).pool!;
  mark('up');
  say('pool-start', (await pool()).total, (await pool()).free);
  const run = (vm: string) => {
    const p = start(`qnet run ${vm}`, [process.execPath, QNET, 'run', 'sriov', '--name', vm, '--api', '/tmp/qr/api.sock', '--', ...INNER_QEMU]);
    procs.set(vm, p);
    return p;
  };
  const procs = new Map<string, ReturnType<typeof start>>();
  const registered = (vm: string) => until(`${vm} registered`, async () => {
    const p = procs.get(vm);
    if (p && p.exitCode !== null) throw new Error(`qnet run ${vm} exited (${p.exitCode}): ${p.output()}`);
    return (await api.get<VmRecord[]>('/v1/vms')).find((v) => v.name === vm);
  });
  const report = async (vm: string) => {
    const rec = await registered(vm);
    const m = (await pool()).members.find((x) => x.vm === vm)!;
    const dev = (await qmpPci(rec.qmp)).find((d) => d.id === 'qnet0');
    const ip = (await vfinfo(ifname))[m.index];
    say(`${vm}-vf`, m.bdf, m.index, driverOf(m.bdf), rec.hostdev, rec.mac);
    say(`${vm}-pci`, dev?.vendor, dev?.device);
    say(`${vm}-ip`, ip.address, ip.vlan_list?.[0]?.vlan ?? 0);
    return { rec, m };
  };
  const r1 = run('vm1');
  const vm1 = await report('vm1');
  mark('vm1');
  const r2 = run('vm2');
  const vm2 = await report('vm2');
  mark('vm2');
  say('pool-two', (await pool()).free, (await pool()).members.map((m) => `${m.bdf}=${m.vm ?? 'free'}`).join(','));
  // vm1's QEMU quits: qnet run gives the VF back
  await qmpQuit(vm1.rec.qmp);
  say('vm1-run-exit', await exited(r1));
  const after = (await pool()).members.find((m) => m.bdf === vm1.m.bdf)!;
  const ip1 = (await vfinfo(ifname))[vm1.m.index];
  say('vm1-vf-after', after.state, driverOf(vm1.m.bdf), ip1.address, ip1.vlan_list?.[0]?.vlan ?? 0);
  mark('vm1-exit');
  await qmpQuit(vm2.rec.qmp);
  say('vm2-run-exit', await exited(r2));
  mark('end');
  say('pool-end', (await pool()).free, vfs.map(driverOf).join(','), (await vfinfo(ifname)).map((i) => `${i.address}/${i.vlan_list?.[0]?.vlan ?? 0}`).join(','));
  up.kill('SIGTERM');
  say('up-exit', await exited(up));
}

mark('start');
main().then(
  () => { mark('done'); say('driver', 'done'); },
  async (e: Error) => {
    say('driver', 'failed');
    process.stdout.write(`driver error: ${e.stack}\n`);
    const left = [...children];
    for (const c of left) c.kill('SIGKILL');
    await Promise.all(left.map(exited)); // their 'exit' handlers record the logs
    process.stdout.write(logs.join('\n') + '\n');
    process.exitCode = 1;
  },
).finally(() => { for (const c of children) c.kill('SIGKILL'); });
