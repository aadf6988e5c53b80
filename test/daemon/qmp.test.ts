// QmpClient (src/qemu/qmp.ts) against a real QEMU: paused (-S), no display, no disk, one
// virtio-net NIC on a stream netdev that listens on a unix socket (what `qnet run` uses;
// nothing on the network). QEMU is killed by pid.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { QmpClient, QmpError } from '../../src/qemu/qmp.ts';
import { makeTempDir, onExit } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/wait.ts';

const QEMU = 'qemu-system-x86_64';
const haveQemu = spawnSync(QEMU, ['--version']).status === 0;
const MAC = '52:54:00:12:34:99';

const tmp = makeTempDir('qmp-');
const qmpPath = path.join(tmp.path, 'vm.qmp');
const sockPath = path.join(tmp.path, 'vm.sock');
let qemu: ChildProcess | undefined;

async function waitForFile(p: string): Promise<void> {
  await waitFor(() => fs.existsSync(p), {
    what: `QEMU's socket ${p}`, timeoutMs: 20_000,
    abort: () => qemu?.exitCode !== null && qemu?.exitCode !== undefined && `QEMU exited with ${qemu.exitCode}`,
  });
}

before(async () => {
  if (!haveQemu) return;
  qemu = spawn(QEMU, [
    '-M', 'q35', '-S', '-display', 'none', '-nodefaults', '-name', 'guest=qmptest',
    '-netdev', `stream,id=qnet0,server=on,addr.type=unix,addr.path=${sockPath}`,
    '-device', `virtio-net-pci,netdev=qnet0,mac=${MAC}`,
    '-qmp', `unix:${qmpPath},server=on,wait=off`,
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  const pid = qemu.pid!;
  onExit(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  await waitForFile(qmpPath);
});

after(async () => {
  if (!qemu || qemu.exitCode !== null || qemu.signalCode !== null) return;
  const gone = new Promise((r) => qemu!.once('exit', r));
  process.kill(qemu.pid!, 'SIGKILL');
  await gone;
});

test('QMP: greeting, capabilities, query-status, query-name', { skip: !haveQemu && 'no qemu-system-x86_64' }, async () => {
  const q = await QmpClient.connect(qmpPath);
  try {
    assert.ok(q.greeting.version.qemu.major >= 7);
    const st = await q.queryStatus();
    assert.equal(st.status, 'prelaunch');
    assert.equal(st.running, false);
    assert.equal(await q.queryName(), 'qmptest');
  } finally {
    q.close();
  }
});

test('QMP: query-rx-filter has the MAC; info network mentions the NIC and netdev', { skip: !haveQemu && 'no qemu-system-x86_64' }, async () => {
  const q = await QmpClient.connect(qmpPath);
  try {
    const filters = await q.queryRxFilter();
    assert.equal(filters.length, 1);
    assert.equal(filters[0]['main-mac'], MAC);
    assert.equal(typeof filters[0].promiscuous, 'boolean');
    const one = await q.queryRxFilter(filters[0].name);
    assert.equal(one[0]['main-mac'], MAC);
    const info = await q.hmp('info network');
    assert.match(info, new RegExp(`model=virtio-net-pci,macaddr=${MAC}`));
    assert.match(info, /qnet0: index=0,type=stream/);
  } finally {
    q.close();
  }
});

test('QMP: set_link, errors carry the class, concurrent commands get their own replies', { skip: !haveQemu && 'no qemu-system-x86_64' }, async () => {
  const q = await QmpClient.connect(qmpPath);
  try {
    await q.setLink('qnet0', false);
    await q.setLink('qnet0', true);
    await assert.rejects(q.setLink('nope', true), (e: unknown) => e instanceof QmpError && e.errorClass === 'DeviceNotFound' && /nope/.test(e.message));
    await assert.rejects(q.execute('no-such-command'), (e: unknown) => e instanceof QmpError && e.errorClass === 'CommandNotFound');
    const [a, b, c] = await Promise.all([q.queryName(), q.queryStatus(), q.hmp('info network')]);
    assert.equal(a, 'qmptest');
    assert.equal(b.status, 'prelaunch');
    assert.match(c, /virtio-net-pci/);
    // events (collected, not mixed with replies): resuming the VM emits RESUME
    await q.execute('cont');
    await waitFor(() => q.events.some((e) => e.event === 'RESUME'), { what: 'the RESUME event', diag: () => `events: ${q.events.map((e) => e.event).join(',')}` });
    await q.execute('stop');
  } finally {
    q.close();
  }
});

test('QMP: clear errors for a missing socket and for a dead QEMU', { skip: !haveQemu && 'no qemu-system-x86_64' }, async () => {
  await assert.rejects(QmpClient.connect(path.join(tmp.path, 'missing.qmp')), /no QMP socket at .*missing\.qmp/);
  const q = await QmpClient.connect(qmpPath);
  const gone = new Promise((r) => qemu!.once('exit', r));
  process.kill(qemu!.pid!, 'SIGKILL');
  await gone;
  await assert.rejects(q.queryStatus(), /closed/);
  q.close();
  await assert.rejects(QmpClient.connect(qmpPath, { timeoutMs: 1000 }), /nothing listens on the QMP socket|no QMP socket/);
});
