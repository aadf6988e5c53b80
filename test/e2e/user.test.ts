// End-to-end acceptance of `qnet user` with real QEMU guests on its stream socket.
//
// Two `qnet user` child processes (node bin/qnet.js user ...), each with one busybox guest,
// booted concurrently:
//
//   main        hostname/domainname/dnssearch/tftp/tftp-server-name/bootfile, a hostfwd to the
//               guest's httpd, three guestfwds (tcp: to a loopback echo service, two cmd:), DNS
//               upstream = a loopback DNS server of this test
//   restricted  restrict=on with a hostfwd to the guest's httpd
//
// Main guest: DHCP lease fields; ping 10.0.2.2; wget of a loopback HTTP page through 10.0.2.2;
// nslookup through 10.0.2.3 (forwarded to the test's DNS server) incl. NXDOMAIN, and a DNS
// query sent straight to 10.0.2.2:<test DNS port> (UDP NAT to loopback); TFTP download (two
// block sizes) checked by md5; guestfwd tcp: and cmd: (output only, and input echoed by the
// command); a TCP connect to a closed loopback port fails with "Connection refused" (an RST, not a timeout) and is counted; a UDP query to a closed
// loopback port is answered by ICMP port unreachable (the guest socket sees ECONNREFUSED and
// its Icmp InDestUnreachs counter rises); the test fetches the guest's httpd through hostfwd.
// Restricted guest: DHCP, ping 10.0.2.2 (answered by the gateway itself), wget/nc to the
// loopback services refused; hostfwd still reaches its httpd.
//
// Safety: every service is on 127.0.0.1; qnet's DNS upstream is the test's DNS server.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, guestMac, killAllGuests, type Guest } from '../helpers/guest.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { qnet, qnetJson } from '../helpers/qnetd.ts';
import {
  QnetUser, startDns, startHttp, startTcpEcho, freeTcpPort, freeUdpPort, streamNic, type TestDns,
} from '../helpers/user-net.ts';

const TOKEN = randomBytes(5).toString('hex');
const HTTP_BODY = `host-page-${TOKEN}`;
const GUEST_PAGE = `guest-httpd-${TOKEN}`;
const GUEST_PAGE_R = `restricted-httpd-${TOKEN}`;
const CMD_TOKEN = `qnet-cmd-${TOKEN}`;
const DNS_TABLE = { 'probe.qnet.test': '192.0.2.44', 'other.qnet.test': '192.0.2.45' };
const MAC_MAIN = guestMac(11);
const MAC_RESTR = guestMac(12);

// Shell helpers shared by the guest scripts.
const prelude = `
udhcpc -i eth0 -n -q -t 5 -T 2 -O search -O tftp -O bootfile
echo QNET dhcp-rc $?
pingt() {
  out=$(ping -c 3 -W 5 $2 2>&1); rc=$?
  rx=$(echo "$out" | sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p')
  echo "QNET ping-$1 $rc \${rx:-0}"
}
# one line, spaces squeezed, for QNET values
oneline() { tr '\\n' ' ' | tr -s ' '; }
`;

interface Ports { http: number; echo: number; dns: number; closedTcp: number; closedUdp: number; hfMain: number; hfRestr: number }

function mainScript(p: Ports): string {
  return prelude + `
pingt gw 10.0.2.2
echo QNET wget $(timeout 10 wget -q -O - http://10.0.2.2:${p.http}/main 2>&1 | oneline)
out=$(nslookup probe.qnet.test 2>&1); rc=$?
echo QNET dns $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
out=$(nslookup nope.qnet.test 2>&1); rc=$?
echo QNET dns-nx $rc $(echo "$out" | grep -c NXDOMAIN)
# straight to the test's DNS server through the UDP NAT (10.0.2.2 = host loopback)
out=$(timeout 10 nslookup other.qnet.test 10.0.2.2:${p.dns} 2>&1); rc=$?
echo QNET udp-nat $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
timeout 20 tftp -g -r boot/blob.bin -l /tmp/blob 10.0.2.2; echo QNET tftp $? $(md5sum < /tmp/blob | cut -d' ' -f1)
timeout 20 tftp -b 1024 -g -r boot/blob.bin -l /tmp/blob2 10.0.2.2; echo QNET tftp-blksize $? $(md5sum < /tmp/blob2 | cut -d' ' -f1)
timeout 10 tftp -g -r ../etc/passwd -l /tmp/escape 10.0.2.2 >/dev/null 2>&1; echo QNET tftp-escape $?
echo QNET gfwd-tcp $(echo hello-gfwd | timeout 10 nc 10.0.2.100 4444 2>&1 | oneline)
echo QNET gfwd-cmd $(timeout 10 nc 10.0.2.101 5555 </dev/null 2>&1 | oneline)
echo QNET gfwd-cmd-io $(echo line-to-cmd | timeout 10 nc 10.0.2.102 6666 2>&1 | oneline)
out=$(timeout 20 nc 10.0.2.2 ${p.closedTcp} </dev/null 2>&1); rc=$?
echo QNET refused $rc $(echo "$out" | oneline)
out=$(timeout 20 wget -q -O - http://10.0.2.2:${p.closedTcp}/ 2>&1); rc=$?
echo QNET refused-wget $rc $(echo "$out" | oneline)
u0=$(awk '/^Icmp:/ { n++; if (n == 2) print $5 }' /proc/net/snmp)
out=$(timeout 10 nslookup probe.qnet.test 10.0.2.2:${p.closedUdp} 2>&1); rc=$?
u1=$(awk '/^Icmp:/ { n++; if (n == 2) print $5 }' /proc/net/snmp)
echo QNET udp-closed $rc $((u1 - u0)) $(echo "$out" | grep -c 'Connection refused')
mkdir -p /www && echo ${GUEST_PAGE} > /www/index.html && httpd -p 80 -h /www
echo QNET httpd-up
read go
echo QNET finished
`;
}

function restrictedScript(p: Ports): string {
  return prelude + `
pingt gw 10.0.2.2
out=$(timeout 20 wget -q -O - http://10.0.2.2:${p.http}/restricted 2>&1); rc=$?
echo QNET r-wget $rc $(echo "$out" | oneline)
out=$(echo x | timeout 20 nc 10.0.2.2 ${p.echo} 2>&1); rc=$?
echo QNET r-nc $rc $(echo "$out" | oneline)
out=$(nslookup probe.qnet.test 2>&1); rc=$?
echo QNET r-dns $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
mkdir -p /www && echo ${GUEST_PAGE_R} > /www/index.html && httpd -p 80 -h /www
echo QNET httpd-up
read go
echo QNET finished
`;
}

/** GET http://127.0.0.1:port/ with a deadline; the body, or 'ERR <message>'. */
async function fetchText(port: number): Promise<string> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(15_000) });
    return (await r.text()).trim();
  } catch (e) {
    return `ERR ${(e as Error).message} ${String((e as { cause?: unknown }).cause ?? '')}`;
  }
}

describe('qnet user with real QEMU guests', { timeout: 600_000 }, () => {
  const dir = makeTempDir('e2e-user-');
  const tftpDir = join(dir.path, 'tftp');
  const blob = randomBytes(70_000); // 137 blocks of 512 bytes, 69 of 1024
  const blobMd5 = createHash('md5').update(blob).digest('hex');
  const closers: (() => void)[] = [];
  let dns: TestDns;
  let http: Awaited<ReturnType<typeof startHttp>>;
  let echo: Awaited<ReturnType<typeof startTcpEcho>>;
  let ports: Ports;
  let qMain: QnetUser;
  let qRestr: QnetUser;
  let gMain: Guest;
  let gRestr: Guest;
  let rMain: Map<string, string[]>;
  let rRestr: Map<string, string[]>;
  const apiMain = join(dir.path, 'main.api');
  const t0 = Date.now();

  before(async () => {
    mkdirSync(join(tftpDir, 'boot'), { recursive: true });
    writeFileSync(join(tftpDir, 'boot', 'blob.bin'), blob);
    dns = await startDns(DNS_TABLE);
    http = await startHttp(HTTP_BODY);
    echo = await startTcpEcho('echo-svc');
    closers.push(dns.close, http.close, echo.close);
    ports = {
      http: http.port, echo: echo.port, dns: dns.port,
      closedTcp: await freeTcpPort(), closedUdp: await freeUdpPort(),
      hfMain: await freeTcpPort(), hfRestr: await freeTcpPort(),
    };
    const sMain = join(dir.path, 'main.sock');
    const sRestr = join(dir.path, 'restr.sock');
    qMain = await QnetUser.start([
      'hostname=qnet-vm1', 'domainname=qnet.test', 'dnssearch=a.qnet.test', 'dnssearch=b.qnet.test',
      `tftp=${tftpDir}`, 'tftp-server-name=tftp.qnet.test', 'bootfile=boot/blob.bin',
      `hostfwd=tcp:127.0.0.1:${ports.hfMain}-:80`,
      `guestfwd=tcp:10.0.2.100:4444-tcp:127.0.0.1:${echo.port}`,
      `guestfwd=tcp:10.0.2.101:5555-cmd:echo ${CMD_TOKEN}`,
      'guestfwd=tcp:10.0.2.102:6666-cmd:head -n 1',
      `dnsupstream=127.0.0.1:${dns.port}`,
    ].join(','), sMain, undefined, ['--api', apiMain]);
    qRestr = await QnetUser.start(`restrict=on,hostname=qnet-r,hostfwd=tcp:127.0.0.1:${ports.hfRestr}-:80,dnsupstream=127.0.0.1:${dns.port}`, sRestr);
    [gMain, gRestr] = await Promise.all([
      bootGuest({ name: 'user-main', netArgs: streamNic(sMain, MAC_MAIN), script: mainScript(ports), timeoutMs: 600_000 }),
      bootGuest({ name: 'user-restricted', netArgs: streamNic(sRestr, MAC_RESTR), script: restrictedScript(ports), timeoutMs: 600_000 }),
    ]);
    await Promise.all([gMain.waitFor(/QNET httpd-up/, 330_000), gRestr.waitFor(/QNET httpd-up/, 330_000)]);
    rMain = gMain.results();
    rRestr = gRestr.results();
  });

  after(async () => {
    if (process.env.QNET_E2E_VERBOSE) console.log(`${gMain?.output}\n${gRestr?.output}`);
    killAllGuests();
    qMain?.kill();
    qRestr?.kill();
    for (const c of closers) c();
    console.log(`# e2e-user: guests boot ${gMain?.bootMs} / ${gRestr?.bootMs} ms, total ${Date.now() - t0} ms`);
  });

  test('DHCP lease carries the configured options', () => {
    const v = (k: string) => (rMain.get(k) ?? []).join(' ');
    assert.equal(v('dhcp-rc'), '0', gMain.output);
    assert.equal(v('dhcp-ip'), '10.0.2.15');
    assert.equal(v('dhcp-mask'), '24');
    assert.equal(v('dhcp-router'), '10.0.2.2');
    assert.equal(v('dhcp-dns'), '10.0.2.3');
    assert.equal(v('dhcp-serverid'), '10.0.2.2');
    assert.equal(v('dhcp-domain'), 'qnet.test');
    assert.equal(v('dhcp-search'), 'a.qnet.test b.qnet.test');
    assert.equal(v('dhcp-hostname'), 'qnet-vm1');
    assert.equal(v('dhcp-tftp'), 'tftp.qnet.test');
    assert.equal(v('dhcp-bootfile'), 'boot/blob.bin');
    assert.equal(v('dhcp-mtu'), '', 'no MTU option at the default 1500');
    // the restricted network hands out the same addressing
    assert.equal((rRestr.get('dhcp-ip') ?? []).join(' '), '10.0.2.15', gRestr.output);
    assert.equal((rRestr.get('dhcp-hostname') ?? []).join(' '), 'qnet-r');
  });

  test('ping to the gateway', () => {
    assert.deepEqual(rMain.get('ping-gw'), ['0', '3'], gMain.output);
  });

  test('wget of a loopback HTTP page through 10.0.2.2', () => {
    assert.deepEqual(rMain.get('wget'), [HTTP_BODY], gMain.output);
    assert.ok(http.requests.includes('/main'));
  });

  test('DNS through 10.0.2.3 is forwarded to the configured upstream', () => {
    assert.deepEqual(rMain.get('dns'), ['0', '192.0.2.44'], gMain.output);
    assert.equal(rMain.get('dns-nx')?.[0], '1', 'NXDOMAIN makes nslookup fail');
    assert.notEqual(rMain.get('dns-nx')?.[1], '0', 'and it says NXDOMAIN');
    assert.ok(dns.queries.includes('probe.qnet.test'), `upstream saw ${dns.queries.join(',')}`);
    assert.ok(dns.queries.includes('nope.qnet.test'));
  });

  test('UDP NAT: a query to 10.0.2.2:<port> reaches the loopback server and the reply comes back', () => {
    assert.deepEqual(rMain.get('udp-nat'), ['0', '192.0.2.45'], gMain.output);
  });

  test('TFTP download of a file the test wrote (default and negotiated block size)', () => {
    assert.deepEqual(rMain.get('tftp'), ['0', blobMd5], gMain.output);
    assert.deepEqual(rMain.get('tftp-blksize'), ['0', blobMd5]);
    assert.notEqual(rMain.get('tftp-escape')?.[0], '0', 'paths outside the tftp root are refused');
  });

  test('guestfwd to a host TCP service and to a command', () => {
    assert.deepEqual(rMain.get('gfwd-tcp'), ['echo-svc', 'hello-gfwd'], gMain.output);
    assert.deepEqual(rMain.get('gfwd-cmd'), [CMD_TOKEN]);
    // guest -> command stdin -> command stdout -> guest; the command's exit ends the connection
    assert.deepEqual(rMain.get('gfwd-cmd-io'), ['line-to-cmd']);
  });

  test('a refused TCP port is an RST in the guest ("Connection refused", not a timeout), counted', async () => {
    for (const key of ['refused', 'refused-wget']) {
      const r = rMain.get(key) ?? [];
      // exit 1 with ECONNREFUSED; `timeout` would have ended it with 124/143 and no such text
      assert.equal(r[0], '1', `${key}: ${r.join(' ')}`);
      assert.match(r.slice(1).join(' '), /Connection refused/);
    }
    assert.equal((await qMain.stats()).tcpNat.refused, 2);
  });

  test('UDP to a closed host port gets ICMP port unreachable', () => {
    const [rc, icmp, refusedLines] = rMain.get('udp-closed') ?? [];
    assert.notEqual(rc, '0', gMain.output);
    assert.ok(Number(icmp) >= 1, `InDestUnreachs rose by ${icmp}`);
    assert.ok(Number(refusedLines) >= 1, 'nslookup saw ECONNREFUSED');
  });

  test('hostfwd reaches the guest httpd', async () => {
    assert.equal(await fetchText(ports.hfMain), GUEST_PAGE);
  });

  test('forwards change at run time through qnet user --api: qnet forward add, ls, rm', async () => {
    assert.ok(qMain.stdout.includes(`control: qnet forward ls|add|rm user ... --api ${apiMain}`), qMain.stdout);
    const port = await freeTcpPort();
    const add = await qnet(apiMain, ['forward', 'add', 'user', `tcp:${port}`, '10.0.2.15:80']);
    assert.equal(add.code, 0, add.stderr);
    assert.equal(add.stdout, `tcp:127.0.0.1:${port}: tcp 127.0.0.1:${port} -> 10.0.2.15:80 on user\n`);
    assert.equal(await fetchText(port), GUEST_PAGE);
    const ls = await qnetJson<{ id: string; guest: string; guestPort: number; source: string; connections: number }[]>(apiMain, ['forward', 'ls', 'user']);
    assert.deepEqual(ls.filter((f) => f.source === 'runtime').map((f) => [f.id, f.guest, f.guestPort, f.connections]), [[`tcp:127.0.0.1:${port}`, '10.0.2.15', 80, 1]]);
    const rm = await qnet(apiMain, ['forward', 'rm', 'user', `tcp:${port}`]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(await fetchText(port), /^ERR .*ECONNREFUSED/);
    assert.deepEqual((await qnetJson<{ source: string }[]>(apiMain, ['forward', 'ls', 'user'])).filter((f) => f.source === 'runtime'), []);
  });

  test('restrict=on: outbound TCP refused, gateway ping and DNS still served, hostfwd works', async () => {
    assert.deepEqual(rRestr.get('ping-gw'), ['0', '3'], gRestr.output);
    const w = rRestr.get('r-wget') ?? [];
    assert.equal(w[0], '1', w.join(' '));
    assert.match(w.slice(1).join(' '), /Connection refused/);
    assert.equal(rRestr.get('r-nc')?.[0], '1');
    assert.ok(!http.requests.includes('/restricted'), 'the loopback server never saw the restricted guest');
    assert.equal(echo.conns, 1, 'only the main guest\'s guestfwd reached the echo service');
    // qnet's DNS forwarder is a built-in service (like slirp's), not NAT: still answered
    assert.deepEqual(rRestr.get('r-dns'), ['0', '192.0.2.44']);
    assert.equal(await fetchText(ports.hfRestr), GUEST_PAGE_R);
  });

  test('qnet counters agree; guests finish', async () => {
    const s = await qMain.stats();
    assert.equal(s.tcpNat.refused, 2, JSON.stringify(s.tcpNat));
    assert.ok(s.udpNat.refused >= 1, JSON.stringify(s.udpNat));
    assert.deepEqual(s.leases.map((l: { mac: string }) => l.mac), [MAC_MAIN]);
    assert.equal(s.hostfwd[0].connections, 1);
    const r = await qRestr.stats();
    assert.equal(r.tcpNat?.opened ?? 0, 0, 'restricted: nothing was NATed');
    assert.ok(r.tcp.refused >= 2, JSON.stringify(r.tcp));
    gMain.write('go\n');
    gRestr.write('go\n');
    await Promise.all([gMain.waitFor(/QNET finished/, 30_000), gRestr.waitFor(/QNET finished/, 30_000)]);
    assert.deepEqual(await Promise.all([gMain.waitForExit(15_000), gRestr.waitForExit(15_000)]), [0, 0]);
    assert.equal(await qMain.stop(), 0);
    assert.equal(await qRestr.stop(), 0);
  });
});
