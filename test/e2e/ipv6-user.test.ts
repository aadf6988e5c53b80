// IPv6 on user-mode networks, end to end and against QEMU's own -netdev user (libslirp): the
// same guest script and the same options on both, booted concurrently, results compared.
//
// Both run inside one test namespace N with nothing but loopback (slirp's NAT can't reach
// anything beyond this machine). N's loopback holds the "host" services: an HTTP server on
// [::1]:8080 only (a guest reaching it through fec0::2 proves the router address means the
// host's ::1) and a DNS server on 127.0.0.1:53 and [::1]:53 answering A and AAAA from a table.
// slirp forwards fec0::3 to the IPv6 nameserver of /etc/resolv.conf, which `ip netns exec`
// takes from /etc/netns/<N>/resolv.conf (written here, removed at the end); qnet gets
// dnsupstream=[::1]:53, a loopback IPv6 upstream.
//
// The guest (QEMU 7.2 defaults on both sides: fec0::/64, router fec0::2, DNS fec0::3)
// autoconfigures by SLAAC, gets a default route via the router's link-local fe80::2, pings
// fec0::2, fetches http://[fec0::2]:8080/, resolves AAAA through fec0::3, and serves httpd.
// qnet additionally forwards the host's [::1] ports to the guest (to its default IPv4 address
// and to its IPv6 address), which QEMU's hostfwd parser refuses.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, guestMac, killAllGuests, type Guest } from '../helpers/guest.ts';
import { makeTempDir, onExit } from '../helpers/cleanup.ts';
import { createNetns, cleanupNetns, type Netns, needsRoot } from '../helpers/netns.ts';
import { GUEST_SH_LIB, QnetUser, startServicesIn, streamNic } from '../helpers/user-net.ts';

const TOKEN = randomBytes(5).toString('hex');
const HTTP_PORT = 8080;
const HF4 = 18090;
const HF6 = 18091;
const DNS_TABLE = { 'probe6.cmp.test': '192.0.2.66|2001:db8::66' };

/** The SLAAC address a Linux guest forms from its MAC (EUI-64, RFC 4291 appendix A). */
function eui64(prefix: string, mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  b[0] ^= 0x02;
  const g = [(b[0] << 8) | b[1], (b[2] << 8) | 0xff, 0xfe00 | b[3], (b[4] << 8) | b[5]];
  return `${prefix}${g.map((x) => x.toString(16)).join(':')}`;
}

const script = `
${GUEST_SH_LIB}udhcpc -i eth0 -n -q -t 5 -T 2
echo QNET dhcp-rc $?
# SLAAC: the kernel solicits a router once the link is up; wait for the global address
for i in $(seq 1 100); do ip -6 addr show dev eth0 | grep -q 'inet6 fec0' && break; sleep 0.1; done
echo QNET v6-addr $(ip -6 addr show dev eth0 | sed -n 's/.*inet6 \\(fec0[0-9a-f:]*\\)\\/\\([0-9]*\\).*/\\1 \\2/p' | head -1)
echo QNET v6-route $(ip -6 route show default | sed -n 's/^default via \\([0-9a-f:]*\\) dev \\([a-z0-9]*\\).*/\\1 \\2/p')
out=$(ping -6 -c 3 -W 2 fec0::2 2>&1); rc=$?
echo QNET ping6-gw $rc $(echo "$out" | sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p')
echo QNET wget6 $(timeout 10 wget -q -O - http://[fec0::2]:${HTTP_PORT}/ 2>&1 | oneline)
out=$(timeout 15 nslookup -type=AAAA probe6.cmp.test fec0::3 2>&1); rc=$?
echo QNET dns6 $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9a-f:]*\\)$/\\1/p' | grep : | tail -1)
mkdir -p /www && echo guest-page-${TOKEN} > /www/index.html && httpd -p 80 -h /www
echo QNET httpd-up
read go
echo QNET finished
`;

describe('IPv6 on qnet user vs QEMU -netdev user (libslirp)', { timeout: 600_000, skip: needsRoot }, () => {
  const dir = makeTempDir('e2e-ipv6-');
  const macQ = guestMac(41);
  const macS = guestMac(42);
  let n: Netns;
  let q: QnetUser;
  let gq: Guest;
  let gs: Guest;
  let rq: Map<string, string[]>;
  let rs: Map<string, string[]>;
  let removeResolv = (): void => {};
  const t0 = Date.now();

  before(async () => {
    n = await createNetns();
    const resolvDir = join('/etc/netns', n.name);
    const createdTop = !existsSync('/etc/netns');
    mkdirSync(resolvDir, { recursive: true });
    removeResolv = (): void => {
      rmSync(resolvDir, { recursive: true, force: true });
      if (createdTop) try { rmdirSync('/etc/netns'); } catch { /* someone else uses it */ }
    };
    onExit(removeResolv);
    writeFileSync(join(resolvDir, 'resolv.conf'), 'nameserver 127.0.0.1\nnameserver ::1\n');
    await startServicesIn(n, dir.path, {
      http: { addr: '::1', port: HTTP_PORT, body: `host6-page-${TOKEN}` },
      dns: { addr: ['127.0.0.1', '::1'], port: 53, table: DNS_TABLE },
    });
    const sock = join(dir.path, 'qnet.sock');
    const fwd = `hostfwd=tcp:[::1]:${HF4}-:80,hostfwd=tcp:[::1]:${HF6}-[${eui64('fec0::', macQ)}]:80`;
    q = await QnetUser.start(`dnsupstream=[::1]:53,${fwd}`, sock, n);
    [gq, gs] = await Promise.all([
      bootGuest({ name: 'v6-qnet', netnsName: n.name, netArgs: streamNic(sock, macQ), script, timeoutMs: 600_000 }),
      bootGuest({ name: 'v6-slirp', netnsName: n.name, script, timeoutMs: 600_000, netArgs: ['-netdev', 'user,id=n0', '-device', `virtio-net-pci,netdev=n0,mac=${macS}`] }),
    ]);
    await Promise.all([gq.waitFor(/QNET httpd-up/, 360_000), gs.waitFor(/QNET httpd-up/, 360_000)]);
    rq = gq.results();
    rs = gs.results();
  });

  after(async () => {
    if (process.env.QNET_E2E_VERBOSE) console.log(`--- qnet ---\n${gq?.output}\n--- slirp ---\n${gs?.output}\n--- qnet log ---\n${q?.stderr}`);
    killAllGuests();
    q?.kill();
    await cleanupNetns();
    removeResolv();
    console.log(`# e2e-ipv6-user: guest boots ${gq?.bootMs} / ${gs?.bootMs} ms, total ${Date.now() - t0} ms`);
  });

  test('SLAAC: a global address on fec0::/64 formed from the MAC, on both', () => {
    assert.deepEqual(rq.get('v6-addr'), [eui64('fec0::', macQ), '64'], gq.output);
    assert.deepEqual(rs.get('v6-addr'), [eui64('fec0::', macS), '64'], gs.output);
  });

  test('the default route goes via the router\'s link-local address fe80::2, on both', () => {
    assert.deepEqual(rq.get('v6-route'), ['fe80::2', 'eth0']);
    assert.deepEqual(rs.get('v6-route'), rq.get('v6-route'));
  });

  test('ping6 fec0::2 is answered, on both', () => {
    assert.deepEqual(rq.get('ping6-gw'), ['0', '3']);
    assert.deepEqual(rs.get('ping6-gw'), rq.get('ping6-gw'));
  });

  test('http://[fec0::2] reaches the host HTTP server bound to [::1], on both', () => {
    assert.deepEqual(rq.get('wget6'), [`host6-page-${TOKEN}`]);
    assert.deepEqual(rs.get('wget6'), rq.get('wget6'));
  });

  test('AAAA through fec0::3 (a loopback IPv6 upstream for qnet), on both', () => {
    assert.deepEqual(rq.get('dns6'), ['0', '2001:db8::66']);
    assert.deepEqual(rs.get('dns6'), rq.get('dns6'));
  });

  test('qnet only: IPv6 hostfwd from the host\'s [::1] to the guest (by its IPv4 and its IPv6 address)', async () => {
    for (const port of [HF4, HF6]) {
      const r = await n.exec(['timeout', '10', 'busybox', 'wget', '-q', '-O', '-', `http://[::1]:${port}/`]);
      assert.equal(r.stdout.trim(), `guest-page-${TOKEN}`, `port ${port}: ${r.stderr}`);
    }
  });

  test('both guests finish', async () => {
    gq.write('go\n');
    gs.write('go\n');
    assert.deepEqual(await Promise.all([gq.waitForExit(20_000), gs.waitForExit(20_000)]), [0, 0]);
    assert.equal(await q.stop(), 0);
  });
});
