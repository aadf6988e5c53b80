// Self-test of the QEMU test bed: guest image, boot, results convention, virtio-net,
// namespaces/veth/tap, and the guest's udhcpc script.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { bootGuest, detectAccel, ensureGuestImage, guestMac, parseResults, parseResultLines, killAllGuests, type Guest } from '../helpers/guest.ts';
import { createNetns, veth, tap, cleanupNetns, cleanupStaleNetns, needsRoot } from '../helpers/netns.ts';
import { makeTempDir } from '../helpers/cleanup.ts';

after(async () => {
  killAllGuests();
  await cleanupNetns();
});

test('parseResults / guestMac', () => {
  const out = 'noise\nQNET hello world\r\nQNET empty\nQNET-INIT ready\n+ echo QNET traced\nQNET hello again  x\n';
  const r = parseResults(out);
  assert.deepEqual(r.get('hello'), ['again', 'x']);
  assert.deepEqual(r.get('empty'), []);
  assert.equal(r.has('traced'), false);
  assert.equal(r.has('-INIT'), false);
  assert.equal(parseResultLines(out).length, 3);
  const macs = new Set([0, 1, 2, 255, 256, 65535].map(guestMac));
  assert.equal(macs.size, 6);
  for (const m of macs) assert.match(m, /^52:54:00(:[0-9a-f]{2}){3}$/);
});

test('guest boots without network and runs /test.sh', async () => {
  const img = await ensureGuestImage();
  assert.ok(img.kernel && img.initrd);
  const accel = await detectAccel();
  const g = await bootGuest({ name: 'plain', netArgs: [], script: 'echo QNET hello world\necho QNET uname $(uname -r)\n', timeoutMs: 600_000 });
  try {
    await g.waitFor(/QNET-INIT ready/, 180_000);
    const m = await g.waitFor(/QNET-INIT test-exit (\d+)/, 90_000);
    assert.equal(m[1], '0');
    assert.equal(await g.waitForExit(15_000), 0);
    const r = g.results();
    assert.deepEqual(r.get('hello'), ['world']);
    assert.ok(r.get('uname')?.[0]?.endsWith('cloud-amd64'));
    console.log(`# boot: accel=${accel} console marker after ${g.bootMs} ms (guest uptime ${/uptime=([\d.]+)/.exec(g.output)?.[1]} s)`);
  } finally {
    await g.kill();
  }
});

test('waitFor rejects with console tail when the guest exits', async () => {
  const g = await bootGuest({ name: 'quick', netArgs: [], script: 'echo QNET bye now' });
  try {
    await assert.rejects(g.waitFor(/never-printed/, 180_000), (e: Error) => /QEMU exited/.test(e.message) && /QNET bye now/.test(e.message));
  } finally {
    await g.kill();
  }
});

test('refuses user/tap netdevs outside a namespace', async () => {
  await assert.rejects(bootGuest({ netArgs: ['-netdev', 'user,id=n0'], script: '' }), /refusing/);
  await assert.rejects(bootGuest({ netArgs: ['-nic', 'tap,ifname=x'], script: '' }), /refusing/);
});

test('two guests on a dgram pair ping each other', async () => {
  const dir = makeTempDir('dgram-');
  const sa = join(dir.path, 'a.sock');
  const sb = join(dir.path, 'b.sock');
  const nic = (local: string, remote: string, idx: number): string[] => [
    '-netdev', `dgram,id=n0,local.type=unix,local.path=${local},remote.type=unix,remote.path=${remote}`,
    '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(idx)}`,
  ];
  const script = (me: string, peer: string): string => `
ip addr add ${me}/24 dev eth0
ip link set eth0 up
echo QNET mac $(cat /sys/class/net/eth0/address)
i=0
while [ $i -lt 40 ]; do
  if ping -c 1 -W 1 ${peer} >/dev/null 2>&1; then echo QNET ping ok; break; fi
  i=$((i+1))
done
[ $i -lt 40 ] || echo QNET ping fail
# stay up a little so the peer can finish its own pings
sleep 3
`;
  const guests: Guest[] = [];
  try {
    guests.push(await bootGuest({ name: 'dg-a', netArgs: nic(sa, sb, 1), script: script('192.168.77.1', '192.168.77.2'), timeoutMs: 600_000 }));
    guests.push(await bootGuest({ name: 'dg-b', netArgs: nic(sb, sa, 2), script: script('192.168.77.2', '192.168.77.1'), timeoutMs: 600_000 }));
    for (const g of guests) {
      const m = await g.waitFor(/QNET ping (\w+)/, 360_000);
      assert.equal(m[1], 'ok', g.output);
    }
    assert.deepEqual(guests[0].results().get('mac'), [guestMac(1)]);
    assert.deepEqual(guests[1].results().get('mac'), [guestMac(2)]);
    for (const g of guests) assert.equal(await g.waitForExit(30_000), 0);
  } finally {
    for (const g of guests) await g.kill();
    dir.remove();
  }
});

test('namespaces: veth between two namespaces', { skip: needsRoot }, async () => {
  cleanupStaleNetns();
  const a = await createNetns();
  const b = await createNetns();
  assert.match(a.name, /^qnt-\d+-\d+$/);
  const v = await veth(a, b, { addrA: '10.99.0.1/24', addrB: '10.99.0.2/24' });
  assert.match(await a.ip('-br', 'addr', 'show', 'dev', v.a), /10\.99\.0\.1\/24/);
  await b.run(['busybox', 'ping', '-c', '1', '-W', '3', '10.99.0.1']);
  const r = await a.exec(['sh', '-c', 'exit 3']);
  assert.equal(r.code, 3);
  // a long-running process inside is killed by delete()
  const p = a.spawn(['sleep', '300']);
  const gone = new Promise((res) => p.on('exit', res));
  await a.delete();
  await gone;
  await b.delete();
});

test('guest on a tap in a namespace gets a lease from udhcpd and pings the host side', { skip: needsRoot }, async () => {
  const ns = await createNetns();
  const t = await tap(ns, { addr: '192.168.78.1/24' });
  const dir = makeTempDir('udhcpd-');
  const conf = join(dir.path, 'udhcpd.conf');
  await ns.sh(`cat > ${conf} <<'EOF'
start 192.168.78.100
end 192.168.78.110
interface ${t}
lease_file ${dir.path}/leases
pidfile ${dir.path}/udhcpd.pid
option subnet 255.255.255.0
option router 192.168.78.1
option dns 192.168.78.1 192.168.78.53
option domain test.qnet
option lease 600
option mtu 1400
option tftp tftp.test.qnet
option bootfile pxe.0
EOF
touch ${dir.path}/leases`);
  const udhcpd = ns.spawn(['busybox', 'udhcpd', '-f', conf]);
  let udhcpdLog = '';
  udhcpd.stderr?.on('data', (d: Buffer) => (udhcpdLog += d.toString()));
  udhcpd.stdout?.on('data', (d: Buffer) => (udhcpdLog += d.toString()));
  const g = await bootGuest({
    name: 'tap-dhcp',
    netnsName: ns.name,
    netArgs: ['-netdev', `tap,id=n0,ifname=${t},script=no,downscript=no`, '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(3)}`],
    script: `
udhcpc -i eth0 -n -q -t 10 -T 1 || echo QNET dhcp-failed
echo QNET mtu $(cat /sys/class/net/eth0/mtu)
echo QNET resolv $(cat /etc/resolv.conf | tr '\\n' ' ')
if ping -c 1 -W 3 192.168.78.1 >/dev/null 2>&1; then echo QNET ping ok; else echo QNET ping fail; fi
`,
    timeoutMs: 120_000,
  });
  try {
    await g.waitFor(/QNET ping \w+/, 300_000);
    const r = g.results();
    assert.equal(r.has('dhcp-failed'), false, g.output + udhcpdLog);
    assert.deepEqual(r.get('dhcp-event'), ['bound', 'eth0']);
    assert.match(r.get('dhcp-ip')?.[0] ?? '', /^192\.168\.78\.1(0\d|10)$/);
    assert.deepEqual(r.get('dhcp-mask'), ['24']);
    assert.deepEqual(r.get('dhcp-router'), ['192.168.78.1']);
    assert.deepEqual(r.get('dhcp-dns'), ['192.168.78.1', '192.168.78.53']);
    assert.deepEqual(r.get('dhcp-domain'), ['test.qnet']);
    assert.deepEqual(r.get('dhcp-mtu'), ['1400']);
    assert.deepEqual(r.get('dhcp-tftp'), ['tftp.test.qnet']);
    assert.deepEqual(r.get('dhcp-bootfile'), ['pxe.0']);
    assert.deepEqual(r.get('dhcp-hostname'), []);
    assert.deepEqual(r.get('mtu'), ['1400']);
    assert.deepEqual(r.get('resolv'), ['search', 'test.qnet', 'nameserver', '192.168.78.1', 'nameserver', '192.168.78.53']);
    assert.deepEqual(r.get('ping'), ['ok']);
    assert.equal(await g.waitForExit(30_000), 0);
  } finally {
    await g.kill();
    await ns.delete();
    dir.remove();
  }
});
