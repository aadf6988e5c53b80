// When a VM goes away (QEMU exits), the host sides of its NAT connections are closed at once,
// instead of lingering until keepalives give up: what a host service sees when a real
// machine on the LAN is switched off is a reset, not a connection that stays open forever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { bootGuest, guestMac, killAllGuests } from '../helpers/guest.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { QnetUser, startDns, streamNic } from '../helpers/user-net.ts';

test('user: a VM that exits takes its host connections with it', { timeout: 90_000 }, async (t) => {
  const tmp = makeTempDir('vm-exit-');
  const dns = await startDns({});
  const sock = path.join(tmp.path, 'u.sock');
  const qnet = await QnetUser.start(`dnsupstream=127.0.0.1:${dns.port}`, sock);
  let closedAt = 0;
  let opened = 0;
  const server = net.createServer((c) => { opened++; c.on('error', () => {}); c.on('close', () => { closedAt = Date.now(); }); c.write('hello\n'); }).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  t.after(() => { killAllGuests(); qnet.kill(); server.close(); dns.close(); tmp.remove(); });
  const port = (server.address() as net.AddressInfo).port;
  const g = await bootGuest({
    netArgs: streamNic(sock, guestMac(41)),
    script: `ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -T 1 >/dev/null 2>&1
(sleep 600 | nc 10.0.2.2 ${port} > /tmp/got) &
sleep 2
echo QNET got $(cat /tmp/got)
sleep 600
`,
  });
  await g.waitFor(/QNET got hello/, 60_000);
  assert.equal(opened, 1);
  assert.equal(closedAt, 0, 'the connection closed while the VM still ran');
  const killedAt = Date.now();
  await g.kill();
  for (let i = 0; i < 60 && !closedAt; i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(closedAt > 0, 'the host connection stayed open after the VM exited');
  assert.ok(closedAt - killedAt < 3000, `closed ${closedAt - killedAt} ms after the VM exited`);
});
