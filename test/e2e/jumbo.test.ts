// Jumbo frames end to end on a user-mode network: `qnet user mtu=65520` (QEMU's slirp has no
// MTU option at all). DHCP option 26 gives the guest its MTU, the guest exchanges a
// 60,000-byte ping with the gateway without fragmentation either way, and bulk TCP both ways
// uses segments as large as the MTU allows (the MSS is derived from it), hash-checked.
//
// Safety: the only services are on 127.0.0.1.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { bootGuest, guestMac, killAllGuests, type Guest } from '../helpers/guest.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { GUEST_SH_LIB, QnetUser, streamNic } from '../helpers/user-net.ts';
import { waitFor } from '../helpers/wait.ts';

const MTU = 65520;
const SIZE = 16 * 1024 * 1024;

describe('jumbo frames: qnet user mtu=65520 with a real guest', { timeout: 600_000 }, () => {
  const dir = makeTempDir('e2e-jumbo-');
  const blob = randomBytes(SIZE);
  const blobMd5 = createHash('md5').update(blob).digest('hex');
  let q: QnetUser;
  let g: Guest;
  let r: Map<string, string[]>;
  let httpSrv: http.Server;
  let sink: net.Server;
  let sinkMd5 = '';
  let sinkBytes = 0;
  let maxChunk = 0;
  let stats: Record<string, any> = {};

  before(async () => {
    httpSrv = http.createServer((_req, res) => { res.writeHead(200, { 'content-length': SIZE }); res.end(blob); });
    sink = net.createServer((c) => {
      const h = createHash('md5');
      c.on('data', (d) => { h.update(d); sinkBytes += d.length; maxChunk = Math.max(maxChunk, d.length); });
      c.on('end', () => { sinkMd5 = h.digest('hex'); c.end(); });
    });
    await Promise.all([new Promise<void>((res) => httpSrv.listen(0, '127.0.0.1', res)), new Promise<void>((res) => sink.listen(0, '127.0.0.1', res))]);
    const hp = (httpSrv.address() as net.AddressInfo).port;
    const sp = (sink.address() as net.AddressInfo).port;
    const script = `
${GUEST_SH_LIB}udhcpc -i eth0 -n -q -t 5 -T 2
echo QNET dhcp-rc $?
echo QNET link-mtu $(cat /sys/class/net/eth0/mtu)
out=$(ping -c 3 -s 60000 -W 5 10.0.2.2 2>&1); rc=$?
echo QNET bigping $rc $(echo "$out" | sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p') $(echo "$out" | grep -c '^60008 bytes from')
timeout 60 wget -q -O /tmp/down http://10.0.2.2:${hp}/; echo QNET down $? $(md5sum < /tmp/down | cut -d' ' -f1)
timeout 60 nc 10.0.2.2 ${sp} < /tmp/down > /dev/null; echo QNET up $?
echo QNET finished
`;
    const sock = join(dir.path, 'q.sock');
    q = await QnetUser.start(`mtu=${MTU}`, sock);
    g = await bootGuest({ name: 'jumbo', netArgs: streamNic(sock, guestMac(51)), script, timeoutMs: 600_000, memoryMb: 256 });
    await g.waitFor(/QNET finished/, 390_000);
    await waitFor(() => sinkMd5, { what: "the upload's end at the sink" }); // the sink's 'end' follows nc's exit
    r = g.results();
    stats = await q.stats();
  });

  after(async () => {
    if (process.env.QNET_E2E_VERBOSE) console.log(g?.output);
    killAllGuests();
    await q?.stop();
    httpSrv?.close();
    sink?.close();
  });

  test('DHCP option 26 gives the guest the network MTU', () => {
    assert.equal(r.get('dhcp-rc')?.[0], '0', g.output);
    assert.deepEqual(r.get('dhcp-mtu'), [String(MTU)]);
    assert.deepEqual(r.get('link-mtu'), [String(MTU)]);
  });

  test('a 60,000-byte ping and its reply, unfragmented both ways', () => {
    assert.deepEqual(r.get('bigping'), ['0', '3', '3'], g.output);
    assert.equal(stats.gateway.fragmentsSent, 0, 'the gateway fragmented nothing');
    assert.equal(stats.gateway.echoReplies >= 3, true);
  });

  test('bulk TCP host -> guest and guest -> host at MTU 65520, intact', () => {
    assert.deepEqual(r.get('down'), ['0', blobMd5]);
    assert.deepEqual(r.get('up'), ['0']);
    assert.equal(sinkBytes, SIZE);
    assert.equal(sinkMd5, blobMd5);
  });

  test("segments were jumbo-sized: the guest's segments carried more than a 1500-byte MTU allows", () => {
    // the host socket reads whole guest segments when it keeps up: one read above 9000 bytes
    // means segments (or runs of them) far above what a 1500 MTU carries
    assert.ok(maxChunk > 9000, `largest read from the guest's upload: ${maxChunk} bytes`);
    assert.equal(stats.gateway.malformed, 0);
  });
});
