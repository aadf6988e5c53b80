// End-to-end acceptance of `qnet switch` with real QEMU guests.
//
// One `qnet switch` child process (node bin/qnet.js switch ...) with four attach points and
// four busybox guests booted concurrently:
//
//   A 10.0.0.1  --listen unix:s1.sock                         stream, plain port (nc server)
//   B 10.0.0.2  --listen udp:127.0.0.1:P0@127.0.0.1:P1,isolated  dgram, isolated
//   C 10.0.0.3  --listen unix:s2.sock,isolated                 stream, isolated
//   E 10.0.0.5  --listen unix:s3.sock,antispoof=<E's MAC>      stream, anti-spoofing
//
// Checks: A and B (stream vs dgram transport) ping each other and move a TCP payload with nc;
// isolated C reaches plain A but not isolated B (nor B C) — even with a static ARP entry, the
// unicast is dropped and counted as `isolation`; E pings A with its own MAC, then changes its
// MAC and its pings fail, counted as `spoof` drops in the SIGUSR1 JSON; the --pcap file opens
// in tshark and holds the ICMP echo request/reply pairs (and no frame from the spoofed MAC).
//
// The guests wait on their console (`read go`) until all four have their addresses, so no
// guest pings a peer that is still booting.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { bootGuest, guestMac, killAllGuests, type Guest } from '../helpers/guest.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { QnetSwitch, type SwitchStats, type PortStats } from '../helpers/qnet-switch.ts';

async function freeUdpPorts(n: number): Promise<number[]> {
  const socks: dgram.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    socks.push(s);
  }
  const ports = socks.map((s) => s.address().port);
  for (const s of socks) s.close();
  return ports;
}

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((r) => {
    execFile(cmd, args, { timeout: 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      r({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Guest scripts

const SPOOF_MAC = '52:54:00:66:66:66';
const IP = { a: '10.0.0.1', b: '10.0.0.2', c: '10.0.0.3', e: '10.0.0.5' };
const MAC = { a: guestMac(1), b: guestMac(2), c: guestMac(3), e: guestMac(5) };
const PAYLOAD = `qnet-payload-${randomBytes(6).toString('hex')}`;

const prelude = (ip: string): string => `
# warm: wait until a peer answers (ARP resolved), at most ~15 s
warm() { i=0; while [ $i -lt 15 ]; do ping -c 1 -W 1 $1 >/dev/null 2>&1 && return 0; i=$((i+1)); done; return 1; }
# pingt NAME IP: three pings; prints "QNET ping-NAME <exit code> <replies received>"
pingt() {
  out=$(ping -c 3 -W 5 $2 2>&1); rc=$?
  rx=$(echo "$out" | sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p')
  echo "QNET ping-$1 $rc \${rx:-0}"
}
ip addr add ${ip}/24 dev eth0
ip link set eth0 up
echo QNET mac $(cat /sys/class/net/eth0/address)
echo QNET up
read go
`;
const epilogue = `
echo QNET finished
sleep 300
`;

const scriptA = prelude(IP.a) + `
timeout 40 nc -l -p 5000 > /tmp/got &
ncpid=$!
warm ${IP.b}
pingt b ${IP.b}
wait $ncpid
echo QNET nc-rc $?
echo QNET got $(cat /tmp/got)
` + epilogue;

const scriptB = prelude(IP.b) + `
warm ${IP.a}
pingt a ${IP.a}
i=0
while [ $i -lt 10 ]; do
  echo ${PAYLOAD} | timeout 10 nc ${IP.a} 5000 && break
  i=$((i+1)); sleep 1
done
echo QNET nc-sent $i
pingt c ${IP.c}
` + epilogue;

const scriptC = prelude(IP.c) + `
warm ${IP.a}
pingt a ${IP.a}
# a static neighbour entry makes the pings real unicast frames to B's (learned) MAC
arp -s ${IP.b} ${MAC.b}
pingt b ${IP.b}
` + epilogue;

const scriptE = prelude(IP.e) + `
warm ${IP.a}
pingt a ${IP.a}
ip link set eth0 down
ip link set eth0 address ${SPOOF_MAC}
ip link set eth0 up
echo QNET newmac $(cat /sys/class/net/eth0/address)
pingt spoof ${IP.a}
` + epilogue;

// ---------------------------------------------------------------------------------------------

describe('qnet switch with real QEMU guests', { timeout: 600_000 }, () => {
  const dir = makeTempDir('e2e-switch-');
  const s1 = join(dir.path, 's1.sock');
  const s2 = join(dir.path, 's2.sock');
  const s3 = join(dir.path, 's3.sock');
  const pcap = join(dir.path, 'switch.pcap');
  let p0 = 0;
  let p1 = 0;
  let qnet: QnetSwitch | undefined;
  const guests: Guest[] = [];
  const g: Record<'a' | 'b' | 'c' | 'e', Guest> = {} as never;
  let before0: SwitchStats;
  let after0: SwitchStats;
  let final: SwitchStats;
  let exitCode: number | null = -1;
  let setupError: unknown;
  const t0 = Date.now();

  before(async () => {
    try {
      [p0, p1] = await freeUdpPorts(2);
      qnet = await QnetSwitch.start([
        '--listen', `unix:${s1}`,
        '--listen', `udp:127.0.0.1:${p0}@127.0.0.1:${p1},isolated`,
        '--listen', `unix:${s2},isolated`,
        '--listen', `unix:${s3},antispoof=${MAC.e}`,
        '--pcap', pcap,
      ], 4);
      const stream = (sock: string, mac: string): string[] => [
        '-netdev', `stream,id=n0,server=off,addr.type=unix,addr.path=${sock}`,
        '-device', `virtio-net-pci,netdev=n0,mac=${mac}`,
      ];
      const boots = await Promise.all([
        bootGuest({ name: 'sw-a', netArgs: stream(s1, MAC.a), script: scriptA, timeoutMs: 600_000 }),
        bootGuest({
          name: 'sw-b',
          netArgs: [
            '-netdev', `dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=${p1},remote.type=inet,remote.host=127.0.0.1,remote.port=${p0}`,
            '-device', `virtio-net-pci,netdev=n0,mac=${MAC.b}`,
          ],
          script: scriptB,
          timeoutMs: 120_000,
        }),
        bootGuest({ name: 'sw-c', netArgs: stream(s2, MAC.c), script: scriptC, timeoutMs: 600_000 }),
        bootGuest({ name: 'sw-e', netArgs: stream(s3, MAC.e), script: scriptE, timeoutMs: 600_000 }),
      ]);
      [g.a, g.b, g.c, g.e] = boots;
      guests.push(...boots);
      await Promise.all(guests.map((x) => x.waitFor(/^QNET up$/m, 180_000)));
      const tUp = Date.now();
      // Before anything pings: E has only sent from its own MAC, nothing was dropped as spoofed.
      before0 = await qnet.stats();
      for (const x of guests) x.write('go\n');
      await Promise.all(guests.map((x) => x.waitFor(/^QNET finished$/m, 180_000)));
      after0 = await qnet.stats();
      const tDone = Date.now();
      ({ code: exitCode, final } = await qnet.stopWithStats());
      console.log(`guests up after ${tUp - t0} ms (boot ${guests.map((x) => `${x.name}=${x.bootMs}ms`).join(' ')}), scripts done after ${tDone - tUp} ms more`);
    } catch (e) {
      setupError = e;
    }
  });

  after(async () => {
    qnet?.kill();
    await Promise.all(guests.map((x) => x.kill()));
    killAllGuests();
    dir.remove();
  });

  const ready = (): void => {
    if (setupError) throw setupError;
  };
  const res = (x: Guest, key: string): string[] => x.results().get(key) ?? [];
  const portOn = (s: SwitchStats, peer: string): PortStats => {
    const p = s.ports.find((q) => q.peer === peer);
    assert.ok(p, `no port with peer ${peer} in ${JSON.stringify(s.ports.map((q) => q.peer))}`);
    return p;
  };

  test('guests came up with their MACs on four ports', () => {
    ready();
    for (const k of ['a', 'b', 'c', 'e'] as const) assert.deepEqual(res(g[k], 'mac'), [MAC[k]], `${k}: ${g[k].output}`);
    assert.equal(before0.ports.length, 4, JSON.stringify(before0));
    assert.equal(portOn(before0, `127.0.0.1:${p1}`).kind, 'dgram');
    assert.equal(portOn(before0, `127.0.0.1:${p1}`).isolated, true);
    assert.equal(portOn(before0, s2).isolated, true);
    assert.equal(portOn(before0, s1).isolated, false);
    assert.equal(portOn(before0, s3).drops.spoof, 0, 'no spoof drops before E changed its MAC');
  });

  test('stream guest and dgram guest ping each other and exchange a TCP payload', () => {
    ready();
    assert.deepEqual(res(g.a, 'ping-b'), ['0', '3'], `A→B ping\n${g.a.output}`);
    assert.deepEqual(res(g.b, 'ping-a'), ['0', '3'], `B→A ping\n${g.b.output}`);
    assert.deepEqual(res(g.a, 'nc-rc'), ['0'], g.a.output);
    assert.deepEqual(res(g.a, 'got'), [PAYLOAD], `payload received by A\n${g.a.output}\n--- B ---\n${g.b.output}`);
    assert.deepEqual(portOn(after0, s1).macs, [MAC.a]);
    assert.deepEqual(portOn(after0, `127.0.0.1:${p1}`).macs, [MAC.b]);
    assert.ok(after0.switch.forwarded > 0);
  });

  test('isolated ports reach the plain port but not each other', () => {
    ready();
    assert.deepEqual(res(g.c, 'ping-a'), ['0', '3'], `isolated C → plain A must work\n${g.c.output}`);
    const cb = res(g.c, 'ping-b');
    assert.notEqual(cb[0], '0', `isolated C → isolated B must fail\n${g.c.output}`);
    assert.equal(cb[1], '0');
    const bc = res(g.b, 'ping-c');
    assert.notEqual(bc[0], '0', `isolated B → isolated C must fail\n${g.b.output}`);
    assert.equal(bc[1], '0');
    // C's unicasts to B's learned MAC (static ARP entry) were dropped and counted.
    assert.ok(portOn(after0, s2).drops.isolation >= 3, JSON.stringify(portOn(after0, s2)));
    assert.equal(portOn(after0, s1).drops.isolation, 0);
  });

  test('spoofed source MAC on an anti-spoofing port is dropped and counted', () => {
    ready();
    assert.deepEqual(res(g.e, 'ping-a'), ['0', '3'], `E with its own MAC reaches A\n${g.e.output}`);
    assert.deepEqual(res(g.e, 'newmac'), [SPOOF_MAC]);
    const sp = res(g.e, 'ping-spoof');
    assert.notEqual(sp[0], '0', `ping from the spoofed MAC must fail\n${g.e.output}`);
    assert.equal(sp[1], '0');
    const pe = portOn(after0, s3);
    assert.ok(pe.drops.spoof > 0, `spoof drops on E's port: ${JSON.stringify(pe)}`);
    assert.deepEqual(pe.macs, [MAC.e], 'only the allowed MAC is learned on that port, never the spoofed one');
    for (const peer of [s1, s2, `127.0.0.1:${p1}`]) assert.equal(portOn(after0, peer).drops.spoof, 0);
  });

  test('SIGTERM prints the counters again and exits 0', () => {
    ready();
    assert.equal(exitCode, 0, qnet?.stderr);
    assert.ok(portOn(final, s3).drops.spoof >= portOn(after0, s3).drops.spoof);
    assert.ok(final.switch.forwarded >= after0.switch.forwarded);
    assert.equal(existsSync(s1), false, 'unix socket removed on exit');
  });

  test('pcap opens in tshark and shows the ICMP echo pairs', async () => {
    ready();
    const r = await run('tshark', ['-r', pcap, '-Y', 'icmp', '-T', 'fields', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'icmp.type']);
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.trim().split('\n').map((l) => l.trim().split('\t').join(' '));
    const count = (row: string) => rows.filter((x) => x === row).length;
    // A ⇄ B (stream ⇄ dgram), both directions, requests (8) and replies (0)
    assert.ok(count(`${IP.a} ${IP.b} 8`) >= 3 && count(`${IP.b} ${IP.a} 0`) >= 3, `A→B echo pairs:\n${r.stdout}`);
    assert.ok(count(`${IP.b} ${IP.a} 8`) >= 3 && count(`${IP.a} ${IP.b} 0`) >= 3, `B→A echo pairs:\n${r.stdout}`);
    assert.ok(count(`${IP.c} ${IP.a} 8`) >= 3 && count(`${IP.a} ${IP.c} 0`) >= 3, `C→A echo pairs:\n${r.stdout}`);
    // C's requests to B entered the switch (and were captured) but B never saw them: no reply.
    assert.ok(count(`${IP.c} ${IP.b} 8`) >= 3, r.stdout);
    assert.equal(count(`${IP.b} ${IP.c} 0`), 0, r.stdout);
    // Spoofed frames are dropped before capture.
    const spoof = await run('tshark', ['-r', pcap, '-Y', `eth.src == ${SPOOF_MAC}`, '-T', 'fields', '-e', 'frame.number']);
    assert.equal(spoof.code, 0, spoof.stderr);
    assert.equal(spoof.stdout.trim(), '', 'no frame from the spoofed MAC in the capture');
  });
});
