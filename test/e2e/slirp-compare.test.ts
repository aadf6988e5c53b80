// Differential end-to-end test: the same guest script against `qnet user` and against QEMU's
// own `-netdev user` (libslirp), with the same options, booted concurrently; results compared.
//
// Both run inside one test network namespace N that has nothing but loopback, so slirp's
// NAT can't reach anything outside this machine. N's loopback holds the "host" services:
// an HTTP server (reached by the guests as 10.0.2.2:8080) and a DNS server on 127.0.0.1:53.
// slirp forwards 10.0.2.3 to the nameserver in /etc/resolv.conf; `ip netns exec` bind-mounts
// /etc/netns/<N>/resolv.conf over it, so a file there (nameserver 127.0.0.1, removed at the
// end) points slirp at the test's DNS server too. qnet gets dnsupstream=127.0.0.1:53.
//
// Compared: DHCP lease fields (ip, mask, router, dns, domain, search, hostname, server id,
// lease time, tftp server name, boot file), ping 10.0.2.2 and 10.0.2.3, wget through
// 10.0.2.2, nslookup through 10.0.2.3, TFTP download, hostfwd to the guest's httpd, a
// refused TCP port (both: an RST, "Connection refused"). Deliberate differences are asserted per side:
//   - DHCP: qnet also sends option 28 (broadcast) and option 67 (boot file name, which slirp
//     puts only in the BOOTP `file` field; qnet sets both).
//   - UDP to a closed host port: qnet's NAT sockets are connected, so the kernel reports the
//     host's ICMP port unreachable and qnet passes it to the guest (nslookup fails at once
//     with "Connection refused"); slirp's unconnected sockets never learn of it, so the guest
//     just times out.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, guestMac, killAllGuests, type Guest } from '../helpers/guest.ts';
import { makeTempDir, onExit } from '../helpers/cleanup.ts';
import { createNetns, cleanupNetns, type Netns, needsRoot } from '../helpers/netns.ts';
import { GUEST_SH_LIB, QnetUser, startServicesIn, streamNic } from '../helpers/user-net.ts';

const TOKEN = randomBytes(5).toString('hex');
const HTTP_PORT = 8080;
const CLOSED_TCP = 8081;
const CLOSED_UDP = 5399;
const HF_QNET = 18080;
const HF_SLIRP = 18081;
const DNS_TABLE = { 'probe.cmp.test': '192.0.2.55' };

/** -netdev user options given to both (qnet additionally gets dnsupstream). */
function userOpts(tftpDir: string, hostfwdPort: number): string {
  return [
    'hostname=cmp-vm', 'domainname=cmp.test', 'dnssearch=s1.cmp.test', 'dnssearch=s2.cmp.test',
    `tftp=${tftpDir}`, 'tftp-server-name=tftp.cmp.test', 'bootfile=pxe/file.bin',
    `hostfwd=tcp:127.0.0.1:${hostfwdPort}-:80`,
  ].join(',');
}

// One script for both guests, byte for byte.
const script = `
${GUEST_SH_LIB}udhcpc -i eth0 -n -q -t 5 -T 2 -O search -O tftp -O bootfile
echo QNET dhcp-rc $?
pingt gw 10.0.2.2
pingt dns 10.0.2.3
echo QNET wget $(timeout 10 wget -q -O - http://10.0.2.2:${HTTP_PORT}/ 2>&1 | oneline)
out=$(timeout 15 nslookup probe.cmp.test 2>&1); rc=$?
echo QNET dns $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
timeout 20 tftp -g -r pxe/file.bin -l /tmp/f 10.0.2.2; echo QNET tftp $? $(md5sum < /tmp/f | cut -d' ' -f1)
out=$(timeout 20 nc 10.0.2.2 ${CLOSED_TCP} </dev/null 2>&1); rc=$?
echo QNET refused $rc $(echo "$out" | oneline)
out=$(timeout 8 nslookup probe.cmp.test 10.0.2.2:${CLOSED_UDP} 2>&1); rc=$?
echo QNET udp-closed $rc $(echo "$out" | grep -c 'Connection refused')
mkdir -p /www && echo guest-page-${TOKEN} > /www/index.html && httpd -p 80 -h /www
echo QNET httpd-up
read go
echo QNET finished
`;

describe('qnet user vs QEMU -netdev user (libslirp): same guest script, same options', { timeout: 600_000, skip: needsRoot }, () => {
  const dir = makeTempDir('e2e-slirp-cmp-');
  const tftpDir = join(dir.path, 'tftp');
  const blob = randomBytes(20_000);
  const blobMd5 = createHash('md5').update(blob).digest('hex');
  let n: Netns;
  let q: QnetUser;
  let gq: Guest;
  let gs: Guest;
  let rq: Map<string, string[]>;
  let rs: Map<string, string[]>;
  let resolvDir = '';
  let removeResolv = (): void => {};
  const t0 = Date.now();
  const val = (r: Map<string, string[]>, k: string): string => (r.get(k) ?? []).join(' ');

  before(async () => {
    mkdirSync(join(tftpDir, 'pxe'), { recursive: true });
    writeFileSync(join(tftpDir, 'pxe', 'file.bin'), blob);
    n = await createNetns();
    resolvDir = join('/etc/netns', n.name);
    // remove /etc/netns itself afterwards too if this test is what created it
    const createdTop = !existsSync('/etc/netns');
    mkdirSync(resolvDir, { recursive: true });
    removeResolv = (): void => {
      rmSync(resolvDir, { recursive: true, force: true });
      if (createdTop) try { rmdirSync('/etc/netns'); } catch { /* not empty: someone else uses it */ }
    };
    onExit(removeResolv);
    writeFileSync(join(resolvDir, 'resolv.conf'), 'nameserver 127.0.0.1\n');
    await startServicesIn(n, dir.path, {
      http: { addr: '127.0.0.1', port: HTTP_PORT, body: `host-page-${TOKEN}` },
      dns: { addr: '127.0.0.1', port: 53, table: DNS_TABLE },
    });
    const sock = join(dir.path, 'qnet.sock');
    q = await QnetUser.start(`${userOpts(tftpDir, HF_QNET)},dnsupstream=127.0.0.1:53`, sock, n);
    [gq, gs] = await Promise.all([
      bootGuest({ name: 'cmp-qnet', netnsName: n.name, netArgs: streamNic(sock, guestMac(31)), script, timeoutMs: 600_000 }),
      bootGuest({
        name: 'cmp-slirp', netnsName: n.name, script, timeoutMs: 140_000,
        netArgs: ['-netdev', `user,id=n0,${userOpts(tftpDir, HF_SLIRP)}`, '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(32)}`],
      }),
    ]);
    await Promise.all([gq.waitFor(/QNET httpd-up/, 360_000), gs.waitFor(/QNET httpd-up/, 360_000)]);
    rq = gq.results();
    rs = gs.results();
  });

  after(async () => {
    if (process.env.QNET_E2E_VERBOSE) console.log(`--- qnet ---\n${gq?.output}\n--- slirp ---\n${gs?.output}`);
    killAllGuests();
    q?.kill();
    await cleanupNetns();
    removeResolv();
    console.log(`# e2e-slirp-compare: guest boots ${gq?.bootMs} / ${gs?.bootMs} ms, total ${Date.now() - t0} ms`);
  });

  test('DHCP leases are the same', () => {
    assert.equal(val(rq, 'dhcp-rc'), '0', gq.output);
    assert.equal(val(rs, 'dhcp-rc'), '0', gs.output);
    // boot_file is the BOOTP `file` header field, siaddr the next-server address
    const fields = ['ip', 'mask', 'subnet', 'router', 'dns', 'domain', 'search', 'hostname', 'lease', 'serverid', 'siaddr', 'sname', 'tftp', 'boot_file', 'mtu'];
    const pick = (r: Map<string, string[]>) => Object.fromEntries(fields.map((f) => [f, val(r, `dhcp-${f}`)]));
    assert.deepEqual(pick(rq), pick(rs));
    assert.equal(val(rq, 'dhcp-ip'), '10.0.2.15');
    assert.equal(val(rq, 'dhcp-hostname'), 'cmp-vm');
    assert.equal(val(rq, 'dhcp-search'), 's1.cmp.test s2.cmp.test');
    assert.equal(val(rq, 'dhcp-boot_file'), 'pxe/file.bin');
    assert.equal(val(rq, 'dhcp-mtu'), '', 'neither sends an MTU option at the default MTU');
    // Deliberate additions in qnet: option 28 (broadcast address), which slirp leaves out (the
    // guest derives the same 10.0.2.255 from the mask), and bootfile= also as option 67, not
    // only in the BOOTP file field: clients that read only options (e.g. iPXE's DHCP
    // option parsing, udhcpc's $bootfile) see it too.
    assert.equal(val(rq, 'dhcp-broadcast'), '10.0.2.255');
    assert.equal(val(rs, 'dhcp-broadcast'), '');
    assert.equal(val(rq, 'dhcp-bootfile'), 'pxe/file.bin');
    assert.equal(val(rs, 'dhcp-bootfile'), '');
  });

  test('ping to 10.0.2.2 and 10.0.2.3', () => {
    for (const [name, r] of [['qnet', rq], ['slirp', rs]] as const) {
      assert.deepEqual(r.get('ping-gw'), ['0', '3'], name);
      assert.deepEqual(r.get('ping-dns'), ['0', '3'], name);
    }
  });

  test('wget through 10.0.2.2 reaches the host loopback', () => {
    assert.deepEqual(rq.get('wget'), [`host-page-${TOKEN}`]);
    assert.deepEqual(rs.get('wget'), rq.get('wget'));
  });

  test('DNS through 10.0.2.3', () => {
    assert.deepEqual(rq.get('dns'), ['0', '192.0.2.55']);
    assert.deepEqual(rs.get('dns'), rq.get('dns'));
  });

  test('TFTP download', () => {
    assert.deepEqual(rq.get('tftp'), ['0', blobMd5]);
    assert.deepEqual(rs.get('tftp'), rq.get('tftp'));
  });

  test('refused TCP port: "Connection refused" (an RST, not a timeout) on both', async () => {
    for (const [name, r] of [['qnet', rq], ['slirp', rs]] as const) {
      const v = r.get('refused') ?? [];
      assert.equal(v[0], '1', `${name}: ${v.join(' ')}`);
      assert.match(v.slice(1).join(' '), /Connection refused/, name);
    }
    assert.equal((await q.stats()).tcpNat.refused, 1);
  });

  test('UDP to a closed host port: qnet reports port unreachable, slirp stays silent (deliberate)', async () => {
    const [qrc, qref] = rq.get('udp-closed') ?? [];
    assert.notEqual(qrc, '0');
    assert.ok(Number(qref) >= 1, 'qnet: the guest socket saw ECONNREFUSED');
    assert.ok((await q.stats()).udpNat.refused >= 1, 'qnet: the host\'s port unreachable was counted and passed on');
    const [src, sref] = rs.get('udp-closed') ?? [];
    assert.notEqual(src, '0');
    assert.equal(sref, '0', 'slirp: no ICMP port unreachable reaches the guest');
  });

  test('hostfwd reaches the guest httpd on both', async () => {
    for (const port of [HF_QNET, HF_SLIRP]) {
      const r = await n.exec(['timeout', '10', 'busybox', 'wget', '-q', '-O', '-', `http://127.0.0.1:${port}/`]);
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
