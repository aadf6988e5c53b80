// End-to-end: `qnet user` NAT over IPv6 to a fake internet host in another namespace, and
// guest pings through raw ICMP sockets where ping sockets are not permitted.
//
//   namespace A: qnet user (DNS upstream on A's loopback) and the guest's QEMU; veth with
//                2001:db8:1::2/64 and 198.51.100.2/24, default routes via B; an unreachable
//                route for 2001:db8:dead::/48 (the host has no way there);
//                net.ipv4.ping_group_range left at the kernel default ("1 0": root excluded),
//                so qnet must fall back to raw ICMP sockets (it runs as root) for both families
//   namespace B: the "internet host" 2001:db8:1::1 / 198.51.100.1: a TCP service (replies with
//                the peer address it saw), a DNS server (AAAA from a table), ICMP echo (kernel)
//
// The guest autoconfigures by SLAAC behind qnet and reaches B over IPv6 by TCP (B sees A's
// address 2001:db8:1::2), UDP (AAAA request/reply) and ping6, and over IPv4 by ping; a TCP
// connect to 2001:db8:dead::1 fails at once (the host's ENETUNREACH becomes an ICMPv6
// no-route for the guest) instead of hanging.
//
// Nothing leaves the namespaces: A's only routes out are the veth to B.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { bootGuest, guestMac, killAllGuests, type Guest } from '../helpers/guest.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { createNetns, veth, cleanupNetns, type Netns, needsRoot } from '../helpers/netns.ts';
import { GUEST_SH_LIB, QnetUser, startServicesIn, streamNic } from '../helpers/user-net.ts';

const TOKEN = randomBytes(5).toString('hex');
const B6 = '2001:db8:1::1';
const A6 = '2001:db8:1::2';
const B4 = '198.51.100.1';
const A4 = '198.51.100.2';
const NOWHERE = '2001:db8:dead::1';
const TCP_PORT = 7000;

const script = `
${GUEST_SH_LIB}udhcpc -i eth0 -n -q -t 5 -T 2
echo QNET dhcp-rc $?
for i in $(seq 1 100); do ip -6 addr show dev eth0 | grep -q 'inet6 fec0' && break; sleep 0.1; done
out=$(ping -6 -c 3 -W 2 ${B6} 2>&1); rc=$?
echo QNET ping6-b $rc $(echo "$out" | sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p')
pingt b4 ${B4}
echo QNET tcp6 $(echo hello-${TOKEN} | timeout 10 nc ${B6} ${TCP_PORT} 2>&1 | oneline)
out=$(timeout 10 nslookup -type=AAAA far6.qnet.test ${B6} 2>&1); rc=$?
echo QNET udp6 $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9a-f:]*\\)$/\\1/p' | grep : | tail -1)
t0=$(now); out=$(timeout 20 nc ${NOWHERE} ${TCP_PORT} </dev/null 2>&1); rc=$?; t1=$(now)
echo QNET noroute6 $rc $((t1 - t0)) $(echo "$out" | oneline)
echo QNET finished
`;

describe('qnet user NAT over IPv6 (and raw ICMP for both families) to a host in another namespace', { timeout: 600_000, skip: needsRoot }, () => {
  const dir = makeTempDir('e2e-ipv6-nat-');
  let a: Netns;
  let b: Netns;
  let q: QnetUser;
  let g: Guest;
  let r: Map<string, string[]>;
  const t0 = Date.now();

  before(async () => {
    a = await createNetns();
    b = await createNetns();
    const v = await veth(a, b, { addrA: `${A4}/24`, addrB: `${B4}/24` });
    await a.ip('-6', 'addr', 'add', `${A6}/64`, 'dev', v.a, 'nodad');
    await b.ip('-6', 'addr', 'add', `${B6}/64`, 'dev', v.b, 'nodad');
    await a.addRoute('default', { via: B4 });
    await a.ip('-6', 'route', 'add', 'default', 'via', B6);
    await a.ip('-6', 'route', 'add', 'unreachable', '2001:db8:dead::/48');
    await startServicesIn(b, dir.path, {
      tcp: { addr: B6, port: TCP_PORT, prefix: `fake-inet6-${TOKEN}` },
      dns: { addr: B6, port: 53, table: { 'far6.qnet.test': '2001:db8:77::7' } },
    });
    const sock = join(dir.path, 'user.sock');
    q = await QnetUser.start('dnsupstream=127.0.0.1:5353', sock, a);
    g = await bootGuest({ name: 'ipv6-nat', netnsName: a.name, netArgs: streamNic(sock, guestMac(43)), script, timeoutMs: 600_000 });
    await g.waitFor(/QNET finished/, 300_000);
    r = g.results();
  });

  after(async () => {
    if (process.env.QNET_E2E_VERBOSE) console.log(`${g?.output}\n--- qnet ---\n${q?.stderr}`);
    killAllGuests();
    q?.kill();
    await cleanupNetns();
    console.log(`# e2e-ipv6-nat: guest boot ${g?.bootMs} ms, total ${Date.now() - t0} ms`);
  });

  test('TCP over IPv6 to the fake internet host; it sees qnet\'s address as the source', () => {
    assert.deepEqual(r.get('tcp6'), [`fake-inet6-${TOKEN}`, `from=${A6}`, `hello-${TOKEN}`], g.output);
  });

  test('UDP over IPv6: an AAAA request and its reply', () => {
    assert.deepEqual(r.get('udp6'), ['0', '2001:db8:77::7'], g.output);
  });

  test('ping6 to the fake internet host through a raw ICMPv6 socket (ping sockets not permitted)', async () => {
    assert.deepEqual(r.get('ping6-b'), ['0', '3'], g.output);
    const s = await q.stats();
    assert.equal(s.icmpNat.mode6, 'raw');
  });

  test('ping over IPv4 through a raw ICMP socket too', async () => {
    assert.deepEqual(r.get('ping-b4'), ['0', '3'], g.output);
    const s = await q.stats();
    assert.equal(s.icmpNat.mode4, 'raw');
    assert.equal(s.icmpNat.notPermitted, 0);
    assert.ok(s.icmpNat.replies >= 6, JSON.stringify(s.icmpNat));
  });

  test('no IPv6 route on the host: the guest\'s connect fails at once, it does not hang', async () => {
    const v = r.get('noroute6') ?? [];
    assert.equal(v[0], '1', v.join(' '));
    assert.match(v.slice(2).join(' '), /unreachable|No route/i);
    const s = await q.stats();
    assert.ok(s.tcpNat.unreachable >= 1, JSON.stringify(s.tcpNat));
    assert.equal(await g.waitForExit(15_000), 0);
    assert.equal(await q.stop(), 0);
  });
});
