// The daemon-facing CLI commands, run as real `qnet` processes against the API served over a
// unix socket by an in-memory DaemonControl; `qnet run`, `qnet vm ls` and `qnet info network`
// with a real (paused, diskless) QEMU.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { startApi, type ApiServer } from '../../src/daemon/api.ts';
import type { NetworkInfo, VmRecord } from '../../src/daemon/types.ts';
import { parseForwardArgs } from '../../src/cli/forward.ts';
import { qemuName, qnetQemuArgs } from '../../src/cli/run.ts';
import { table, duration } from '../../src/cli/common.ts';
import { FakeControl } from './fake-control.ts';
import { makeTempDir, onExit } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/wait.ts';

const MAIN = path.resolve(import.meta.dirname, '../../src/cli/main.ts');
const haveQemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;
const tmp = makeTempDir('cli-');

/** A fake that, like the daemon, connects to the stream socket of a registered VM. */
class ConnectingControl extends FakeControl {
  sockets = new Map<string, net.Socket>();
  override connectVm(vm: VmRecord): void {
    super.connectVm(vm);
    const s = net.connect(vm.sock!);
    s.on('error', () => {});
    this.sockets.set(vm.name, s);
  }
  override disconnectVm(name: string): void {
    super.disconnectVm(name);
    this.sockets.get(name)?.destroy();
    this.sockets.delete(name);
  }
  override network(name: string): NetworkInfo {
    const n = super.network(name);
    for (const vm of this.vmList) {
      if (vm.network === name && this.sockets.get(vm.name)?.readyState === 'open') {
        n.ports.push({ ...n.ports[0], id: 100, name: `vm-${vm.name}`, vm: vm.name, macs: [vm.mac] });
      }
    }
    return n;
  }
}

const fake = new ConnectingControl();
fake.runtimeDir = path.join(tmp.path, 'rt');
let server: ApiServer;
const children: ChildProcess[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of fake.sockets.values()) s.destroy();
  await server?.close();
});

async function api(): Promise<string> {
  server ??= await startApi(fake, { socketPath: path.join(tmp.path, 'rt', 'api.sock') });
  return server.socketPath;
}

/** Spawn `qnet ARGS` (asynchronously: the API server lives in this process). */
function qnetProc(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const c = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(c);
  const pid = c.pid!;
  onExit(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  return c;
}

function collect(c: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '', stderr = '';
  c.stdout!.on('data', (d: Buffer) => { stdout += d; });
  c.stderr!.on('data', (d: Buffer) => { stderr += d; });
  return new Promise((resolve) => c.once('close', (code) => resolve({ code, stdout, stderr })));
}

async function qnet(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return collect(qnetProc([args[0], '--api', await api(), ...args.slice(1)]));
}

test('table, duration and argument parsers', () => {
  assert.equal(table(['A', 'LONGER'], [['xyz', 1], ['q', 22]]), 'A     LONGER\nxyz   1\nq     22\n');
  assert.equal(duration(3725), '1h 2m');
  assert.equal(duration(90061), '1d 1h');
  assert.deepEqual(parseForwardArgs('2222', 'vm1:22'), { proto: 'tcp', hostPort: 2222, guest: 'vm1', guestPort: 22 });
  assert.deepEqual(parseForwardArgs('udp:0.0.0.0:5353', '10.0.2.15:53'), { proto: 'udp', hostAddr: '0.0.0.0', hostPort: 5353, guest: '10.0.2.15', guestPort: 53 });
  assert.deepEqual(parseForwardArgs('tcp:[::1]:80', 'web:8080'), { proto: 'tcp', hostAddr: '::1', hostPort: 80, guest: 'web', guestPort: 8080 });
  assert.throws(() => parseForwardArgs('tcp:::1:80', 'web:80'), /brackets/);
  assert.throws(() => parseForwardArgs('99999', 'web:80'), /port number/);
  assert.throws(() => parseForwardArgs('80', 'web'), /GUEST:PORT/);
  assert.throws(() => parseForwardArgs('host.example:80', 'web:1'), /IP address/);
  assert.equal(qemuName(['-m', '512', '-name', 'guest=web1,debug-threads=on']), 'web1');
  assert.equal(qemuName(['-name', 'db']), 'db');
  assert.equal(qemuName(['-m', '512']), undefined);
  assert.deepEqual(qnetQemuArgs({ sock: '/r/vms/a.sock', qmp: '/r/vms/a.qmp', model: 'e1000', mac: '52:54:00:00:00:01' }), [
    '-netdev', 'stream,id=qnet0,server=on,addr.type=unix,addr.path=/r/vms/a.sock',
    '-device', 'e1000,netdev=qnet0,mac=52:54:00:00:00:01',
    '-qmp', 'unix:/r/vms/a.qmp,server=on,wait=off',
  ]);
});

test('qnet status / net / leases: tables and --json', async () => {
  const st = await qnet('status');
  assert.equal(st.code, 0, st.stderr);
  assert.match(st.stdout, /^daemon:\s+qnet 0\.1\.0, pid \d+, up 1h 2m$/m);
  assert.match(st.stdout, /^NETWORK\s+MODE\s+SUBNET\s+PORTS\s+LEASES\s+DUPLICATE MACS$/m);
  assert.match(st.stdout, /^default\s+nat\s+10\.0\.2\.0\/24\s+1\s+2\s+-$/m);
  assert.match(st.stdout, /warnings:\n  - network lab: no DNS upstream reachable/);
  assert.equal(JSON.parse((await qnet('status', '--json')).stdout).version, '0.1.0');

  const ls = await qnet('net', 'ls');
  assert.match(ls.stdout, /^NAME\s+MODE\s+SUBNET\s+GATEWAY\s+PORTS\s+LEASES\s+FORWARDS\s+ATTACH$/m);
  assert.match(ls.stdout, /^lab\s+isolated\s+192\.168\.77\.0\/24\s+-\s+0\s+0\s+0\s+unix:\/run\/qnet\/lab\.sock$/m);
  // columns line up: every row starts its SUBNET column at the same offset
  const lines = ls.stdout.trim().split('\n');
  const col = lines[0].indexOf('SUBNET');
  for (const l of lines.slice(1)) assert.match(l.slice(col), /^\d/);
  assert.deepEqual(JSON.parse((await qnet('net', 'ls', '--json')).stdout).map((n: NetworkInfo) => n.name), ['default', 'lab']);

  const show = await qnet('net', 'show', 'default');
  assert.equal(show.code, 0);
  assert.match(show.stdout, /^gateway:\s+10\.0\.2\.2$/m);
  assert.match(show.stdout, /ports \(1\):\n\s+ID\s+NAME\s+KIND\s+VM/);
  assert.match(show.stdout, /12 \(1\.9 MiB\)\s+9$/m, 'DROPPED counts every reason');
  assert.match(show.stdout, /^\s+port \d+ dropped: queue 1, source\.offSubnet 7, tx 1$/m, 'and names them');
  assert.match(show.stdout, /^\s+52:54:00:00:00:02\s+10\.0\.2\.9\s+-\s+static$/m);
  assert.match(show.stdout, /^\s+tcp:127\.0\.0\.1:2222\s+tcp\s+127\.0\.0\.1:2222\s+vm1:22\s+1\s+config$/m);
  const missing = await qnet('net', 'show', 'nope');
  assert.equal(missing.code, 4);
  assert.equal(missing.stderr, "qnet net: no network 'nope'\n");

  const leases = await qnet('leases');
  assert.match(leases.stdout, /^NETWORK\s+IP\s+MAC\s+HOSTNAME\s+TYPE\s+EXPIRES$/m);
  // sorted by address: .9 before .15
  assert.ok(leases.stdout.indexOf('10.0.2.9') < leases.stdout.indexOf('10.0.2.15'));
  assert.match(leases.stdout, /^default\s+10\.0\.2\.15\s+52:54:00:00:00:01\s+vm1\s+dynamic\s+(59m \d+s|1h 0m)$/m);
  assert.equal((await qnet('leases', 'lab')).stdout, 'no leases\n');
  assert.equal(JSON.parse((await qnet('leases', 'default', '--json')).stdout).length, 2);
});

test('qnet forward add / ls / rm', async () => {
  const add = await qnet('forward', 'add', 'lab', 'udp:127.0.0.1:5353', '192.168.77.10:53');
  assert.equal(add.code, 0, add.stderr);
  assert.equal(add.stdout, 'udp:127.0.0.1:5353: udp 127.0.0.1:5353 -> 192.168.77.10:53 on lab\n');
  const dup = await qnet('forward', 'add', 'lab', 'udp:127.0.0.1:5353', '192.168.77.10:53');
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /exists/);
  const ls = await qnet('forward', 'ls');
  assert.match(ls.stdout, /^NETWORK\s+ID\s+HOST\s+GUEST\s+CONNECTIONS\s+SOURCE$/m);
  assert.match(ls.stdout, /^lab\s+udp:127\.0\.0\.1:5353\s+udp:127\.0\.0\.1:5353\s+192\.168\.77\.10:53\s+0\s+runtime$/m);
  assert.equal(JSON.parse((await qnet('forward', 'ls', 'lab', '--json')).stdout)[0].network, 'lab');
  const rm = await qnet('forward', 'rm', 'lab', 'udp:127.0.0.1:5353');
  assert.equal(rm.stdout, 'removed udp:127.0.0.1:5353 (-> 192.168.77.10:53)\n');
  const bad = await qnet('forward', 'add', 'lab', '2222');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /expected: qnet forward add NET/);
  const badPort = await qnet('forward', 'add', 'lab', '70000', 'vm:22');
  assert.equal(badPort.code, 2);
  assert.match(badPort.stderr, /host port must be a port number/);
});

test('qnet capture: --seconds, and Ctrl-C for an open-ended one', async () => {
  const rel = path.relative(process.cwd(), path.join(tmp.path, 'rel.pcap'));
  const timed = await qnet('capture', 'default', '-w', rel, '--seconds', '0.3', '--json');
  assert.equal(timed.code, 0, timed.stderr);
  const r = JSON.parse(timed.stdout);
  assert.equal(r.path, path.resolve(rel), 'a relative path is resolved by the CLI');
  assert.ok(r.frames >= 1);
  const file = fs.readFileSync(r.path);
  assert.equal(file.readUInt32LE(0), 0xa1b2c3d4, 'the CLI wrote the streamed pcap');
  assert.equal(file.length, 24 + r.frames * (16 + 60));

  const c = qnetProc(['capture', 'default', '--port', 'vm1', '-w', path.join(tmp.path, 'x.pcap'), '--api', await api()]);
  const out = collect(c);
  let err = '';
  c.stderr!.on('data', (d: Buffer) => { err += d; });
  await waitFor(() => /Ctrl-C stops/.test(err), { what: 'qnet capture to say it runs', diag: () => err });
  const cap = fake.captures.at(-1)!;
  assert.deepEqual([cap.port, cap.stopped], ['vm1', false]);
  c.kill('SIGINT');
  const done = await out;
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stderr, /\d+ frames captured on default port vm1 to .*x\.pcap/);
  assert.equal(cap.stopped, true);
});

test('qnet attach: args one per line, --shell, --json', async () => {
  const a = await qnet('attach', 'default', '--name', 'web', '--model', 'e1000');
  assert.equal(a.code, 0, a.stderr);
  assert.deepEqual(a.stdout.trim().split('\n'), ['-netdev', 'stream,id=qnet-default,addr.type=unix,addr.path=/run/qnet/default.sock', '-device', 'e1000,netdev=qnet-default,mac=52:54:00:ab:cd:03']);
  const s = await qnet('attach', 'default', '--name', 'web', '--shell');
  assert.equal(s.stdout, '-netdev stream,id=qnet-default,addr.type=unix,addr.path=/run/qnet/default.sock -device virtio-net-pci,netdev=qnet-default,mac=52:54:00:ab:cd:03\n');
  assert.equal(JSON.parse((await qnet('attach', 'default', '--name', 'web', '--json')).stdout).mac, '52:54:00:ab:cd:03');
  const anon = await qnet('attach', 'default');
  assert.match(anon.stderr, /VM name vm-[0-9a-f]{6}/);
});

test('without a daemon: a clear message and exit status 3', async () => {
  const p = path.join(tmp.path, 'none', 'api.sock');
  const r = await collect(qnetProc(['status'], { QNET_API: p }));
  assert.equal(r.code, 3);
  assert.equal(r.stderr, `qnet status: qnet daemon not running: no API socket at ${p}; start it with \`qnet up\` (or point at it with --api PATH / QNET_API)\n`);
});

test('qnet run + vm ls + info network with a real QEMU', { skip: !haveQemu && 'no qemu-system-x86_64', timeout: 60_000 }, async () => {
  const sock = await api();
  const run = qnetProc(['run', 'default', '--name', 'tvm', '--api', sock, '--',
    'qemu-system-x86_64', '-M', 'q35', '-S', '-display', 'none', '-nodefaults']);
  const runDone = collect(run);
  const vm = await waitFor(() => fake.vmList.find((v) => v.name === 'tvm'), { what: 'qnet run to register the VM', timeoutMs: 20_000 });
  assert.equal(vm.sock, path.join(fake.runtimeDir, 'vms', 'tvm.sock'));
  assert.equal(vm.qmp, path.join(fake.runtimeDir, 'vms', 'tvm.qmp'));
  assert.equal(vm.mac, '52:54:00:ab:cd:03');
  assert.notEqual(vm.pid, run.pid, 'the pid is QEMU\'s, not qnet run\'s');
  await waitFor(() => fake.sockets.get('tvm')?.readyState === 'open', { what: "the fake daemon's connection to the VM's stream socket" });

  const ls = await qnet('vm', 'ls');
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, /^NAME\s+NETWORK\s+PID\s+STATE\s+UP\s+NIC\s+MAC\s+MODEL\s+PROMISC\s+QNET PORT$/m);
  assert.match(ls.stdout, new RegExp(`^tvm\\s+default\\s+${vm.pid}\\s+prelaunch\\s+\\S+\\s+\\S+\\s+52:54:00:ab:cd:03\\s+virtio-net-pci\\s+(yes|no)\\s+connected$`, 'm'));
  const j = JSON.parse((await qnet('vm', 'ls', '--json')).stdout);
  assert.equal(j[0].nics[0].mac, '52:54:00:ab:cd:03');
  assert.equal(j[0].nics[0].qnet, true);
  assert.equal(j[0].state, 'prelaunch');

  const info = await qnet('info', 'network');
  assert.equal(info.code, 0, info.stderr);
  assert.match(info.stdout, /^network default:\n  tvm \(pid \d+\):\n    \S+: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:ab:cd:03\n/);
  assert.match(info.stdout, /qnet0: index=0,type=stream/);
  assert.equal(JSON.parse((await qnet('info', 'network', '--json')).stdout)[0].vms[0].name, 'tvm');

  const link = await qnet('vm', 'link', 'tvm', 'down');
  assert.equal(link.stdout, 'tvm: link down\n');

  // a second VM with the same name is refused while the first runs
  const dup = await qnet('run', 'default', '--name', 'tvm', '--', 'qemu-system-x86_64', '-S');
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /VM 'tvm' is already running \(pid \d+\); pick another --name/);

  run.kill('SIGTERM'); // passed on to QEMU, which exits 0 on SIGTERM
  const done = await runDone;
  assert.equal(done.code, 0, done.stderr);
  assert.deepEqual(fake.disconnected, ['tvm']);
  assert.equal(fake.vmList.length, 0);
  assert.equal(fs.existsSync(vm.sock), false);
  assert.equal(fs.existsSync(vm.qmp), false);
  let alive = true;
  try { process.kill(vm.pid, 0); } catch { alive = false; }
  assert.equal(alive, false, 'QEMU is gone');
});

test('qnet run: QEMU failing early gives its exit status', { skip: !haveQemu && 'no qemu-system-x86_64' }, async () => {
  const bad = await qnet('run', 'default', '--name', 'bad', '--', 'qemu-system-x86_64', '-no-such-option');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /QEMU exited before it opened its network socket \(status 1\)/);
  assert.equal(fake.vmList.length, 0);
});

test('qnet run: a missing program is reported; no QEMU command or --json is a usage error', async () => {
  const missing = await qnet('run', 'default', '--name', 'bad2', '--', '/nonexistent/qemu');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot run \/nonexistent\/qemu: spawn \/nonexistent\/qemu ENOENT/);
  assert.equal(fake.vmList.length, 0);
  const noCmd = await qnet('run', 'default');
  assert.equal(noCmd.code, 2);
  // qnet run stays QEMU's parent and prints no listing: --json is refused before anything runs
  // (a QEMU that fails at once, so an accepted --json ends the test with the wrong status, not a hang)
  const json = await qnet('run', 'default', '--name', 'j', '--json', '--', 'qemu-system-x86_64', '-no-such-option');
  assert.equal(json.code, 2, json.stderr);
  assert.match(json.stderr, /^qnet run: --json: qnet run prints no listing .*qnet vm ls --json/);
  assert.equal(json.stdout, '');
  assert.equal(fake.vmList.length, 0);
});
