import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { explain } from '../../src/qemu/explain.ts';
import { adopt } from '../../src/qemu/adopt.ts';
import { convert } from '../../src/qemu/convert.ts';
import { lint, formatDiagnostic } from '../../src/qemu/lint.ts';
import { parseQemuOpts, formatQemuOpts, inetAton } from '../../src/qemu/opts.ts';
import { shellSplit, stripProgram } from '../../src/qemu/args.ts';

test('QemuOpts: implied key, ",," escaping, short-form booleans', () => {
  const p = parseQemuOpts('user,id=n0,tftp=/a,,b,restrict,noipv6', { impliedKey: 'type' });
  assert.deepEqual(p.entries.map((e) => [e.key, e.value]), [['type', 'user'], ['id', 'n0'], ['tftp', '/a,b'], ['restrict', 'on'], ['ipv6', 'off']]);
  assert.equal(formatQemuOpts([['type', 'user'], ['tftp', '/a,b']], 'type'), 'user,tftp=/a,,b');
  assert.equal(parseQemuOpts('nic,', { impliedKey: 'type' }).entries.length, 1);
  assert.match(parseQemuOpts('stream,server', { impliedKey: 'type', keyval: true }).error!, /Expected '=' after parameter 'server'/);
});

test('QemuOpts: JSON form flattens nested keys and String lists', () => {
  const p = parseQemuOpts('{"type":"stream","id":"s","server":false,"addr":{"type":"unix","path":"/x"}}');
  assert.ok(p.json);
  assert.deepEqual(p.entries.map((e) => [e.key, e.value]), [['type', 'stream'], ['id', 's'], ['server', 'off'], ['addr.type', 'unix'], ['addr.path', '/x']]);
  const u = parseQemuOpts('{"type":"user","hostfwd":[{"str":"tcp::1-:2"},{"str":"udp::3-:4"}]}');
  assert.deepEqual(u.entries.filter((e) => e.key === 'hostfwd').map((e) => e.value), ['tcp::1-:2', 'udp::3-:4']);
});

test('inet_aton forms', () => {
  assert.equal(inetAton('10.0.2.15'), 0x0a00020f);
  assert.equal(inetAton('10.2.15'), 0x0a02000f);
  assert.equal(inetAton('0x7f.1'), 0x7f000001);
  assert.equal(inetAton('256.1.1.1'), undefined);
  assert.equal(inetAton('addr'), undefined);
});

test('pasted tutorial lines are split and the program name dropped', () => {
  const a = stripProgram(shellSplit("[root@kvm-host ~]# qemu-system-x86_64 -m 1024 \\\n -nic 'user,guestfwd=tcp:10.0.2.100:1234-cmd:nc a 1'"));
  assert.equal(a.program, 'qemu-system-x86_64');
  assert.deepEqual(a.args, ['-m', '1024', '-nic', 'user,guestfwd=tcp:10.0.2.100:1234-cmd:nc a 1']);
});

test('explain: user NAT with a forwarded port', () => {
  const e = explain(['-netdev', 'user,id=n0,hostfwd=tcp::2222-:22', '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,addr=0x8']);
  assert.equal(e.nics.length, 1);
  assert.equal(e.nics[0].pci, '00:08.0');
  assert.equal(e.nics[0].mac, '52:54:00:00:00:01');
  assert.match(e.text, /user-mode NAT on 10\.0\.2\.0\/24, guest reaches host loopback at 10\.0\.2\.2/);
  assert.match(e.text, /host port 2222 forwarded to guest 22/);
});

test('explain: legacy hub with two NICs, assigned MACs and default slots', () => {
  const e = explain(['-net', 'nic', '-net', 'nic,model=virtio', '-net', 'user']);
  assert.deepEqual(e.nics.map((n) => n.mac), ['52:54:00:12:34:56', '52:54:00:12:34:57']);
  assert.deepEqual(e.nics.map((n) => n.pci.slice(0, 7)), ['00:03.0', '00:04.0']);
  assert.match(e.text, /together with virtio-net-pci\.0/);
  assert.deepEqual(e.hubs, [{ hub: 0, nics: ['e1000.0', 'virtio-net-pci.0'], backends: ['user.0'] }]);
});

test('explain: socket, stream, tap, bridge and passthrough', () => {
  const e = explain(['-M', 'q35', '-nic', 'socket,mcast=230.0.0.1:1234', '-nic', 'bridge,br=br0', '-nic', 'tap,ifname=tap0,script=no',
    '-netdev', 'stream,id=s,server=off,addr.type=unix,addr.path=/run/q.sock', '-device', 'e1000e,netdev=s', '-device', 'vfio-pci,host=03:00.3']);
  assert.match(e.text, /multicast group 230\.0\.0\.1:1234/);
  assert.match(e.text, /bridge br0/);
  assert.match(e.text, /TAP interface tap0; no set-up script/);
  assert.match(e.text, /connects to unix:\/run\/q\.sock/);
  assert.match(e.text, /Host PCI device 03:00\.3 passed through/);
  assert.equal(e.nics[0].model, 'e1000e');
});

test('adopt: user network becomes a qnet user stream', () => {
  const r = adopt(['-m', '1G', '-netdev', 'user,id=n0,net=10.1.0.0/24,hostfwd=tcp::2222-:22', '-device', 'virtio-net-pci,netdev=n0', 'disk.img'], { socketDir: '/run/user/1000/qnet' });
  assert.ok(r.ok);
  assert.equal(r.services.length, 1);
  assert.deepEqual(r.services[0].argv, ['qnet', 'user', 'net=10.1.0.0/24,hostfwd=tcp::2222-:22', '--listen', 'unix:/run/user/1000/qnet/n0.sock']);
  assert.deepEqual(r.args, ['-m', '1G', '-netdev', 'stream,id=n0,server=off,addr.type=unix,addr.path=/run/user/1000/qnet/n0.sock', '-device', 'virtio-net-pci,netdev=n0', 'disk.img']);
});

test('adopt: socket peers meet on one qnet switch; default socket dir follows XDG_RUNTIME_DIR', () => {
  const a = adopt(['-nic', 'socket,listen=127.0.0.1:5000,model=virtio'], { socketDir: '/d' });
  const b = adopt(['-nic', 'socket,connect=127.0.0.1:5000,model=virtio'], { socketDir: '/d' });
  assert.equal(a.services[0].socket, b.services[0].socket);
  assert.deepEqual(a.services[0].argv, ['qnet', 'switch', '--listen', 'unix:/d/tcp-5000.sock']);
  const saved = process.env.XDG_RUNTIME_DIR;
  process.env.XDG_RUNTIME_DIR = '/run/user/7';
  try {
    assert.equal(adopt(['-nic', 'user']).services[0].socket, '/run/user/7/qnet/nic0.sock');
  } finally {
    if (saved === undefined) delete process.env.XDG_RUNTIME_DIR; else process.env.XDG_RUNTIME_DIR = saved;
  }
});

test('adopt: the implicit default network is made explicit', () => {
  const r = adopt(['-m', '512'], { socketDir: '/d' });
  assert.equal(r.services.length, 1);
  assert.deepEqual(r.args, ['-m', '512', '-netdev', 'stream,id=net0,server=off,addr.type=unix,addr.path=/d/net0.sock', '-device', 'e1000,netdev=net0']);
});

test('adopt refuses a line with errors', () => {
  const r = adopt(['-netdev', 'user,id=a,foo=1']);
  assert.equal(r.ok, false);
});

test('convert --to libvirt: interfaces and hostdev', () => {
  const x = convert(['-net', 'nic,model=virtio,macaddr=52:54:00:00:00:01', '-net', 'bridge,br=br0', '-device', 'vfio-pci,host=0000:03:00.3,addr=06'], 'libvirt').xml!;
  assert.match(x, /<interface type='bridge'>\n  <mac address='52:54:00:00:00:01'\/>\n  <source bridge='br0'\/>\n  <model type='virtio'\/>\n<\/interface>/);
  assert.match(x, /<hostdev mode='subsystem' type='pci' managed='yes'>\n  <source>\n    <address domain='0x0000' bus='0x03' slot='0x00' function='0x3'\/>\n  <\/source>\n  <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'\/>/);
  const s = convert(['-netdev', 'socket,id=s,listen=127.0.0.1:5555', '-device', 'e1000,netdev=s'], 'libvirt').xml!;
  assert.match(s, /<interface type='server'>\n  <source address='127\.0\.0\.1' port='5555'\/>/);
  const v = convert(['-chardev', 'socket,id=c0,path=/run/vu.sock', '-netdev', 'vhost-user,id=v,chardev=c0', '-device', 'virtio-net-pci,netdev=v'], 'libvirt').xml!;
  assert.match(v, /<interface type='vhostuser'>\n  <source type='unix' path='\/run\/vu\.sock' mode='client'\/>/);
});

test('diagnostics read like QEMU and carry a fix', () => {
  const r = lint(['-netdev', 'tap,id=t,fd=3,ifname=tap0', '-device', 'e1000,netdev=t']);
  const text = formatDiagnostic(r.diagnostics[0]);
  assert.match(text, /^qnet: -netdev tap,id=t,fd=3,ifname=tap0: ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd= \(got ifname=\)\n  hint: /);
  const m = lint(['-nic', 'user,model=e1000x']);
  assert.match(m.diagnostics[0].hint!, /valid models: e1000, e1000-82544gc/);
});

function cli(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'qemu', ...args], { encoding: 'utf8', cwd: new URL('../..', import.meta.url).pathname });
}

test('CLI: lint exit codes and --json for every subcommand', () => {
  const bad = cli('lint', '--', '-netdev', 'user,id=a', '-device', 'e1000,netdev=b');
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /Property 'e1000\.netdev' can't find value 'b'/);
  const good = cli('lint', '--json', '--', 'qemu-system-x86_64', '-nic', 'user,mac=52:54:00:01:02:03');
  assert.equal(good.status, 0);
  assert.equal(JSON.parse(good.stdout).ok, true);
  const conv = cli('convert', '--json', '--to', 'nic', '--', '-net nic,model=virtio -net user');
  assert.equal(JSON.parse(conv.stdout).command, '-nic user,model=virtio-net-pci');
  const ex = cli('explain', '--json', '--', '-nic', 'user');
  assert.equal(JSON.parse(ex.stdout).nics[0].model, 'e1000');
  const ad = cli('adopt', '--json', '--socket-dir', '/d', '--', '-nic', 'user');
  assert.equal(JSON.parse(ad.stdout).services[0].command, "qnet user '' --listen unix:/d/nic0.sock");
  const usage = cli('frob');
  assert.equal(usage.status, 2);
});
