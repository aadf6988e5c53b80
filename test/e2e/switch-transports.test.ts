// Every QEMU socket netdev flavour against one `qnet switch`, with real guests: legacy
// `-netdev socket,connect=` to qnet's TCP listener, `-netdev dgram` over unix datagram
// sockets, `-netdev socket,mcast=` (qnet joins the group), and qnet as the client of a QEMU
// that is the server (`-netdev stream,server=on`). Guest 1 pings all the others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { bootGuest, guestMac, killAllGuests } from '../helpers/guest.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { waitFor } from '../helpers/wait.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

const script = (ip: string, peers: string[]) => `ip addr add ${ip}/24 dev eth0
ip link set eth0 up
echo QNET up
read go
for p in ${peers.join(' ')}; do
  if ping -c 2 -W 3 $p >/dev/null 2>&1; then echo QNET reach $p yes; else echo QNET reach $p no; fi
done
echo QNET done
`;
const idle = (ip: string) => `ip addr add ${ip}/24 dev eth0
ip link set eth0 up
echo QNET up
sleep 60
`;

test('switch: socket connect=, dgram over unix, mcast and stream server=on all join one segment', async (t) => {
  const tmp = makeTempDir('sw-tr-');
  t.after(() => { killAllGuests(); tmp.remove(); });
  const tcpPort = await freePort();
  const mcastPort = await freePort();
  const qemuServerSock = path.join(tmp.path, 'qemu-server.sock');
  const qnetGram = path.join(tmp.path, 'qnet.dgram');
  const qemuGram = path.join(tmp.path, 'qemu.dgram');
  // QEMU as the stream server must be up before qnet connects: boot it first.
  const g4 = await bootGuest({ name: 'srv', netArgs: ['-netdev', `stream,id=n0,server=on,addr.type=unix,addr.path=${qemuServerSock}`, '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(24)}`], script: idle('10.1.0.4') });
  await waitFor(() => fs.existsSync(qemuServerSock), { what: "the QEMU stream server's socket", timeoutMs: 30_000 });
  const qnet = spawn(process.execPath, [path.join(root, 'bin/qnet.js'), 'switch',
    '--listen', `tcp:127.0.0.1:${tcpPort}`,
    '--listen', `unixgram:${qnetGram}@${qemuGram}`,
    '--listen', `mcast:239.255.77.1:${mcastPort}@127.0.0.1`,
    '--connect', `unix:${qemuServerSock}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => qnet.kill('SIGTERM'));
  let out = '';
  qnet.stdout.on('data', (d) => (out += d));
  qnet.stderr.on('data', (d) => (out += d));
  await waitFor(() => (out.match(/listening on/g) ?? []).length >= 3, { what: 'qnet switch to listen on 3 attach points', timeoutMs: 30_000, diag: () => out });
  assert.equal((out.match(/listening on/g) ?? []).length, 3, out);

  const [g1, g2, g3] = await Promise.all([
    bootGuest({ name: 'tcp', netArgs: ['-netdev', `socket,id=n0,connect=127.0.0.1:${tcpPort}`, '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(21)}`], script: script('10.1.0.1', ['10.1.0.2', '10.1.0.3', '10.1.0.4']) }),
    bootGuest({ name: 'gram', netArgs: ['-netdev', `dgram,id=n0,local.type=unix,local.path=${qemuGram},remote.type=unix,remote.path=${qnetGram}`, '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(22)}`], script: idle('10.1.0.2') }),
    bootGuest({ name: 'mcast', netArgs: ['-netdev', `socket,id=n0,mcast=239.255.77.1:${mcastPort},localaddr=127.0.0.1`, '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(23)}`], script: idle('10.1.0.3') }),
  ]);
  await Promise.all([g1, g2, g3, g4].map((g) => g.waitFor(/QNET up/, 180_000)));
  g1.write('go\n');
  await g1.waitFor(/QNET done/, 180_000);
  for (const ip of ['10.1.0.2', '10.1.0.3', '10.1.0.4']) {
    assert.match(g1.output, new RegExp(`QNET reach ${ip.replace(/\./g, '\\.')} yes`), `guest 1 cannot reach ${ip}:\n${g1.output.slice(-1500)}\n${out}`);
  }
});
