// When a VM goes away (QEMU exits), the host sides of its NAT connections are reset when its
// port closes, instead of lingering until keepalives give up: what a host service sees when a
// real machine on the LAN is switched off is a reset, not a connection that stays open forever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { bootGuest, guestMac, killAllGuests } from '../helpers/guest.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { QnetUser, startDns, streamNic } from '../helpers/user-net.ts';
import { waitFor } from '../helpers/wait.ts';

test('user: a VM that exits takes its host connections with it', { timeout: 300_000 }, async (t) => {
  const tmp = makeTempDir('vm-exit-');
  const dns = await startDns({});
  const sock = path.join(tmp.path, 'u.sock');
  const qnet = await QnetUser.start(`dnsupstream=127.0.0.1:${dns.port}`, sock);
  let closed = false;
  let closeError = '';
  let opened = 0;
  const server = net.createServer((c) => {
    opened++;
    c.on('error', (e: NodeJS.ErrnoException) => { closeError = e.code ?? e.message; });
    c.on('close', () => { closed = true; });
    c.write('hello\n');
  }).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  t.after(() => { killAllGuests(); qnet.kill(); server.close(); dns.close(); tmp.remove(); });
  const port = (server.address() as net.AddressInfo).port;
  const g = await bootGuest({
    netArgs: streamNic(sock, guestMac(41)),
    script: `ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -T 1 >/dev/null 2>&1
(sleep 600 | nc 10.0.2.2 ${port} > /tmp/got) &
while [ ! -s /tmp/got ]; do sleep 0.1; done
echo QNET got $(cat /tmp/got)
sleep 600
`,
  });
  await g.waitFor(/QNET got hello/, 180_000);
  assert.equal(opened, 1);
  assert.equal(closed, false, 'the connection closed while the VM still ran');
  await g.kill();
  // the host side is reset when the VM's port goes (a keepalive would take minutes to notice;
  // the deadline only guards a hang)
  await waitFor(() => closed, { what: 'the host connection to close after the VM exited', timeoutMs: 20_000 });
  assert.equal(closeError, 'ECONNRESET', 'the host sees a reset, as from a machine that was switched off');
  // qnet logs it right after the reset (its stderr may come a moment after the reset itself)
  await waitFor(() => /guest port closed: its connections were reset on the host side .*connections=1/.test(qnet.stderr), { what: "qnet's log of the reset", diag: () => qnet.stderr });
});
