// Issue 13, case 4: a state file of the wrong shape, truncated or unreadable no longer stops
// the daemon (or leaves a process holding its sockets): it is moved aside with a timestamp,
// the message names the file and what was wrong, and the daemon starts with empty state and
// its configuration. A fatal start error closes every listener and exits non-zero, so the
// next start is not blocked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { StateStore, validateState } from '../../src/daemon/state.ts';
import { ApiClient } from '../../src/daemon/client.ts';
import type { StatusInfo } from '../../src/daemon/types.ts';
import { setLogSink } from '../../src/util/log.ts';
import { makeTempDir, onExit } from '../helpers/cleanup.ts';
import { until } from '../network/raw-guest.ts';

const logs: string[] = [];
setLogSink((l) => logs.push(l));
const tmp = makeTempDir('hostile-state-');
const MAIN = path.resolve(import.meta.dirname, '../../src/cli/main.ts');

const BAD: [string, string, RegExp][] = [
  ['a network that is a number', '{"version":1,"networks":{"lab":5},"vms":[]}', /networks\.lab: expected an object \{leases, forwards, macs\}, got 5/],
  ['null networks', '{"version":1,"networks":null,"vms":[]}', /networks: expected an object mapping network names to their state, got null/],
  ['null leases', '{"version":1,"networks":{"lab":{"leases":null,"forwards":[],"macs":{}}},"vms":[]}', /networks\.lab\.leases: expected a list of leases, got null/],
  ['a bad forward', '{"version":1,"networks":{"lab":{"leases":[],"forwards":[{"proto":"sctp"}],"macs":{}}},"vms":[]}', /networks\.lab\.forwards\[0\]\.proto: expected "tcp" or "udp"/],
  ['a bad VM MAC', '{"version":1,"networks":{"lab":{"leases":[],"forwards":[],"macs":{"vm1":7}}},"vms":[]}', /networks\.lab\.macs\.vm1: expected a MAC/],
  ['a VM without a pid', '{"version":1,"networks":{},"vms":[{"name":"a","network":"lab","mac":"52:54:00:00:00:01","model":"e1000","qmp":"/q","sock":"/s","startedAt":1}]}', /vms\[0\]\.pid: expected an integer/],
  ['another version', '{"version":2,"networks":{},"vms":[]}', /version: expected 1, got 2/],
  ['a list', '[]', /\(top\): expected an object/],
  ['truncated JSON', '{"version":1,"networks":{"lab":{"leases":[{"mac":"52:54', /is not valid JSON .*truncated\?/],
];

test('state: every wrong shape is moved aside with a timestamp and named; the daemon state starts empty; the bad file is never overwritten', () => {
  for (const [what, text, why] of BAD) {
    const dir = path.join(tmp.path, what.replace(/\W+/g, '-'));
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'state.json');
    fs.writeFileSync(file, text);
    logs.length = 0;
    const st = new StateStore(dir);
    st.load();
    assert.deepEqual(st.state, { version: 1, networks: {}, vms: [] }, what);
    const aside = fs.readdirSync(dir).filter((f) => /^state\.json\.invalid-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$/.test(f));
    assert.equal(aside.length, 1, `${what}: moved aside once`);
    assert.equal(fs.readFileSync(path.join(dir, aside[0]), 'utf8'), text, `${what}: kept as it was`);
    assert.equal(fs.existsSync(file), false);
    assert.equal(st.problems.length, 1);
    assert.match(st.problems[0], why, what);
    assert.ok(st.problems[0].includes(file) && st.problems[0].includes(path.join(dir, aside[0])), `${what}: the message names both files`);
    assert.equal(logs.filter((l) => l.includes(file)).length, 1, `${what}: logged`);
    st.net('lab').forwards.push({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 1, guest: 'x', guestPort: 2 });
    st.save();
    assert.equal(validateState(JSON.parse(fs.readFileSync(file, 'utf8'))).networks.lab.forwards.length, 1, 'a fresh state file is written');
    assert.equal(fs.readFileSync(path.join(dir, aside[0]), 'utf8'), text, 'the moved file is untouched');
  }
  // a valid file loads as it is
  const ok = path.join(tmp.path, 'ok');
  fs.mkdirSync(ok);
  const good = { version: 1, networks: { lab: { leases: [{ mac: '52:54:00:00:00:01', ip: '10.0.0.5', expiresAt: 1, hostname: 'a' }], forwards: [], macs: { vm1: '52:54:00:00:00:01' } } }, vms: [] };
  fs.writeFileSync(path.join(ok, 'state.json'), JSON.stringify(good));
  const st = new StateStore(ok);
  st.load();
  assert.deepEqual(st.state, good);
  assert.deepEqual(st.problems, []);
});

test('state: what every kind of network writes loads back (DHCPv6 leases, VF pools, kernel networks, VMs without a stream socket)', () => {
  const full = {
    version: 1,
    networks: {
      lab: {
        leases: [], forwards: [], macs: { vm1: '52:54:00:00:00:01' },
        leases6: [{ mac: '52:54:00:00:00:01', duid: '00:03:00:01:52:54:00:00:00:01', iaid: 1, ip: 'fd00::10', expiresAt: 5 }],
      },
      sriov: {
        leases: [], forwards: [], macs: {},
        vfs: [{ vm: 'vm2', bdf: '0000:01:10.0', pf: '0000:01:00.0', index: 0, mac: '52:54:00:00:00:02', vlan: 42, pid: 0, since: 1, prev: { mac: '00:00:00:00:00:00', vlan: 0 } }],
      },
    },
    vms: [
      { name: 'vm2', network: 'sriov', mac: '52:54:00:00:00:02', model: 'vfio-pci', pid: 10, qmp: '/q', startedAt: 1, hostdev: '0000:01:10.0' },
      { name: 'vm3', network: 'br', mac: '52:54:00:00:00:03', model: 'virtio-net-pci', pid: 11, qmp: '/q', startedAt: 1, tap: 'qn-br-vm3', uid: 1000 },
    ],
    host: {
      forwarding: { key: 'net.ipv4.ip_forward', before: '0', after: '1' },
      networks: { br: { network: 'br', mode: 'nat', bridge: 'qnbr0', createdBridge: true, table: true, forwarding: true, ports: [{ ifname: 'qn-br-vm3', vm: 'vm3', via: 'tap' }] } },
    },
  };
  assert.deepEqual(validateState(structuredClone(full)), full);
  const dir = path.join(tmp.path, 'full');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify(full));
  const st = new StateStore(dir);
  st.load();
  assert.deepEqual(st.problems, []);
  assert.deepEqual(st.state, full);
  // and their parts are checked too
  const badVf = structuredClone(full) as { networks: { sriov: { vfs: { index: unknown }[] } } };
  badVf.networks.sriov.vfs[0].index = 'zero';
  assert.throws(() => validateState(badVf), /networks\.sriov\.vfs\[0\]\.index: expected an integer/);
  const badPort = structuredClone(full) as { host: { networks: { br: { ports: { via: unknown }[] } } } };
  badPort.host.networks.br.ports[0].via = 'magic';
  assert.throws(() => validateState(badPort), /host\.networks\.br\.ports\[0\]\.via: expected "tap" or "ifup"/);
});

/** `qnet up` as a child process; its output collected; killed at exit. */
function up(config: string, rt: string, state: string) {
  const c = spawn(process.execPath, ['--import', 'tsx', MAIN, 'up', '-c', config, '--runtime-dir', rt, '--state-dir', state], { stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = c.pid!;
  const unregister = onExit(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  const p = { out: '', err: '', code: undefined as number | null | undefined, exited: null as unknown as Promise<number | null> };
  c.stdout!.on('data', (d: Buffer) => { p.out += d; });
  c.stderr!.on('data', (d: Buffer) => { p.err += d; });
  p.exited = new Promise((r) => c.on('close', (code) => { unregister(); p.code = code; r(code); }));
  return { p, kill: (sig: NodeJS.Signals) => c.kill(sig) };
}

const refused = (sock: string) => new Promise<boolean>((r) => { const s = net.connect(sock); s.on('connect', () => { s.destroy(); r(false); }); s.on('error', () => r(true)); });

test('qnet up: a bad state file is moved aside and named, the configured networks start, status warns', { timeout: 60_000 }, async (t) => {
  const d = path.join(tmp.path, 'up1');
  const rt = path.join(d, 'rt'), state = path.join(d, 'state');
  fs.mkdirSync(state, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(state, 'state.json'), '{"version":1,"networks":{"lab":5},"vms":null}');
  const config = path.join(d, 'qnet.yaml');
  fs.writeFileSync(config, 'networks:\n  - name: lab\n    mode: isolated\n    subnet: 10.91.0.0/24\n');
  const { p, kill } = up(config, rt, state);
  t.after(() => kill('SIGKILL'));
  await until(() => p.out.includes('control API on') || p.code !== undefined, 'qnet up to start', 30_000);
  assert.equal(p.code, undefined, `qnet up exited: ${p.err}`);
  assert.match(p.err, new RegExp(`state file ${path.join(state, 'state.json').replace(/[/.]/g, '\\$&')} does not have the state file's shape: networks\\.lab: expected an object`));
  const st = await new ApiClient(path.join(rt, 'api.sock')).get<StatusInfo>('/v1/status');
  assert.deepEqual(st.networks.map((n) => n.name), ['lab']);
  assert.ok(st.warnings.some((w) => /state\.json .*moved it to .*state\.json\.invalid-/.test(w)), st.warnings.join('\n'));
  kill('SIGTERM');
  assert.equal(await p.exited, 0);
});

test('qnet up: a fatal start error closes every listener and exits non-zero; the next start is not blocked', { timeout: 60_000 }, async () => {
  const d = path.join(tmp.path, 'up2');
  const rt = path.join(d, 'rt'), state = path.join(d, 'state');
  fs.mkdirSync(rt, { recursive: true, mode: 0o700 });
  fs.mkdirSync(state, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(state, 'state.json'), '{"version":1,"networks":{"a":5},"vms":[]}');
  const notASocket = path.join(rt, 'b.sock');
  fs.writeFileSync(notASocket, 'a regular file where network b wants its socket');
  const config = path.join(d, 'qnet.yaml');
  const net = (name: string, n: number) => `  - name: ${name}\n    mode: isolated\n    subnet: 10.9${n}.0.0/24\n    attach: unix:${path.join(rt, `${name}.sock`)}\n`;
  fs.writeFileSync(config, `networks:\n${net('a', 2)}${net('b', 3)}`);
  const first = up(config, rt, state);
  const code = await first.p.exited;
  assert.equal(code, 1, first.p.err);
  assert.match(first.p.err, /qnet up: network 'b' .*is not a socket/);
  assert.equal(fs.existsSync(path.join(rt, 'a.sock')), false, 'network a\'s socket was closed and removed');
  assert.equal(await refused(path.join(rt, 'api.sock')), true, 'no API was left listening');

  // fixed: the next start goes through
  fs.rmSync(notASocket);
  const second = up(config, rt, state);
  await until(() => second.p.out.includes('control API on') || second.p.code !== undefined, 'the second qnet up to start', 30_000);
  assert.equal(second.p.code, undefined, second.p.err);
  assert.equal(await refused(path.join(rt, 'a.sock')), false);
  second.kill('SIGTERM');
  assert.equal(await second.p.exited, 0);
});
