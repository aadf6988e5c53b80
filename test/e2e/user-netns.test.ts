// End-to-end: `qnet user` NAT to a non-loopback destination, kept inside test namespaces.
//
//   namespace A: qnet user (DNS upstream = a DNS server on A's loopback) and the guest's QEMU
//                on qnet's unix socket; veth 198.51.100.2/24, default route via .1;
//                net.ipv4.ping_group_range = 0 2147483647 (A only) for qnet's ICMP NAT
//   namespace B: the "internet host" 198.51.100.1: a TCP service (replies with the peer
//                address it saw), a UDP service (DNS answering from a table), ICMP echo (kernel)
//
// The guest (10.0.2.15 behind qnet) reaches all three through NAT: TCP payload round trip
// (B sees A's address, 198.51.100.2), UDP request/reply, ping 198.51.100.1. A closed TCP
// port on B is refused (B's RST becomes the guest's RST). 198.51.100.77 has no host:
// ping fails with no reply (qnet never fakes one) and a TCP connect fails with "host
// unreachable" (A's failed ARP → EHOSTUNREACH → ICMP host unreachable to the guest).
//
// Nothing leaves the namespaces: A's only route out is the veth to B.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { bootGuest, guestMac, killAllGuests, type Guest } from '../helpers/guest.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { createNetns, veth, cleanupNetns, type Netns, needsRoot } from '../helpers/netns.ts';
import { GUEST_SH_LIB, QnetUser, startServicesIn, streamNic } from '../helpers/user-net.ts';

const TOKEN = randomBytes(5).toString('hex');
const B_IP = '198.51.100.1';
const A_IP = '198.51.100.2';
const NOBODY = '198.51.100.77';
const TCP_PORT = 7000;
const CLOSED_PORT = 7009;

const script = `
${GUEST_SH_LIB}udhcpc -i eth0 -n -q -t 5 -T 2
echo QNET dhcp-rc $?
pingt b ${B_IP}
echo QNET tcp $(echo hello-${TOKEN} | timeout 10 nc ${B_IP} ${TCP_PORT} 2>&1 | oneline)
out=$(timeout 10 nslookup far.qnet.test ${B_IP} 2>&1); rc=$?
echo QNET udp $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
out=$(nslookup near.qnet.test 2>&1); rc=$?
echo QNET dns $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
out=$(timeout 20 nc ${B_IP} ${CLOSED_PORT} </dev/null 2>&1); rc=$?
echo QNET refused $rc $(echo "$out" | oneline)
pingt nobody ${NOBODY}
out=$(timeout 30 nc ${NOBODY} ${TCP_PORT} </dev/null 2>&1); rc=$?
echo QNET unreach $rc $(echo "$out" | oneline)
echo QNET finished
`;

describe('qnet user NAT to a host in another namespace', { timeout: 600_000, skip: needsRoot }, () => {
  const dir = makeTempDir('e2e-user-netns-');
  let a: Netns;
  let b: Netns;
  let q: QnetUser;
  let g: Guest;
  let r: Map<string, string[]>;
  const t0 = Date.now();

  before(async () => {
    a = await createNetns();
    b = await createNetns();
    await veth(a, b, { addrA: `${A_IP}/24`, addrB: `${B_IP}/24` });
    await a.addRoute('default', { via: B_IP });
    await a.sysctl('net.ipv4.ping_group_range', '0 2147483647');
    await startServicesIn(b, dir.path, {
      tcp: { addr: B_IP, port: TCP_PORT, prefix: `fake-inet-${TOKEN}` },
      dns: { addr: B_IP, port: 53, table: { 'far.qnet.test': '203.0.113.7' } },
    });
    await startServicesIn(a, dir.path, { dns: { addr: '127.0.0.1', port: 5353, table: { 'near.qnet.test': '203.0.113.8' } } });
    const sock = join(dir.path, 'user.sock');
    q = await QnetUser.start('hostname=netns-vm,dnsupstream=127.0.0.1:5353', sock, a);
    g = await bootGuest({ name: 'user-netns', netnsName: a.name, netArgs: streamNic(sock, guestMac(21)), script, timeoutMs: 600_000 });
    await g.waitFor(/QNET finished/, 300_000);
    r = g.results();
  });

  after(async () => {
    if (process.env.QNET_E2E_VERBOSE) console.log(g?.output);
    killAllGuests();
    q?.kill();
    await cleanupNetns();
    console.log(`# e2e-user-netns: guest boot ${g?.bootMs} ms, total ${Date.now() - t0} ms`);
  });

  test('DHCP', () => {
    assert.equal(r.get('dhcp-rc')?.[0], '0', g.output);
    assert.equal(r.get('dhcp-ip')?.[0], '10.0.2.15');
  });

  test('TCP payload to the fake internet host; it sees the NAT address', () => {
    assert.deepEqual(r.get('tcp'), [`fake-inet-${TOKEN}`, `from=${A_IP}`, `hello-${TOKEN}`], g.output);
  });

  test('UDP request and reply', () => {
    assert.deepEqual(r.get('udp'), ['0', '203.0.113.7'], g.output);
    assert.deepEqual(r.get('dns'), ['0', '203.0.113.8'], 'built-in DNS forwards to the loopback upstream in A');
  });

  test('ping 198.51.100.1 through the ICMP NAT (ping sockets)', () => {
    assert.deepEqual(r.get('ping-b'), ['0', '3'], g.output);
  });

  test('closed port on the remote host: refused (its RST reaches the guest), counted', async () => {
    const v = r.get('refused') ?? [];
    assert.equal(v[0], '1', v.join(' '));
    assert.match(v.slice(1).join(' '), /Connection refused/);
    assert.equal((await q.stats()).tcpNat.refused, 1);
  });

  test('an address with no host: ping gets no (fake) reply, TCP reports unreachable', async () => {
    assert.deepEqual(r.get('ping-nobody'), ['1', '0'], g.output);
    const v = r.get('unreach') ?? [];
    assert.equal(v[0], '1', v.join(' '));
    // A's kernel gives up ARP, and the guest hears it as ICMP host unreachable (EHOSTUNREACH),
    // not as its own connect timeout (that would say "timed out", or `timeout` would end nc)
    assert.match(v.slice(1).join(' '), /No route to host|Host is unreachable/);
    const s = await q.stats();
    assert.ok(s.icmpNat.replies >= 3, JSON.stringify(s.icmpNat));
    assert.equal(s.icmpNat.notPermitted, 0);
    assert.ok(s.tcpNat.unreachable >= 1, JSON.stringify(s.tcpNat));
    assert.equal(await g.waitForExit(15_000), 0);
    assert.equal(await q.stop(), 0);
  });
});
