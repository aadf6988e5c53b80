// Issue 13, cases 2 and 10, against a whole NAT network over its real stream socket: a rogue
// guest (raw frames) tries to take another VM's name and the DHCP pool, while a well-behaved
// guest on another port keeps its name, its address and its connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import net from 'node:net';
import { Network } from '../../src/network/network.ts';
import { parseAttach } from '../../src/network/attach.ts';
import { setLogSink } from '../../src/util/log.ts';
import { ip4ToString } from '../../src/wire/addr.ts';
import { tmpDir } from '../link/peers.ts';
import { DHCP, RawGuest, ip, mac, until } from './raw-guest.ts';

const logLines: string[] = [];
setLogSink((l) => logLines.push(l));

const GW = { ip: ip('10.77.0.1'), mac: '52:55:0a:4d:00:01' };
const VM1 = '52:54:00:00:01:01';
const WEB = '52:54:00:00:01:02';
const ROGUE = '52:54:00:00:0e:01';
const DB = '52:54:00:00:00:10';

async function lab(t: { after: (fn: () => void) => void }, extra: Partial<Parameters<typeof Network.start>[0]> = {}) {
  const dir = tmpDir('qnet-hostile-dhcp-');
  const sock = path.join(dir, 'lab.sock');
  const n = await Network.start({
    name: 'lab', mode: 'nat', net: ip('10.77.0.0'), prefix: 24, gateway: GW.ip, dns: GW.ip,
    dhcpStart: ip('10.77.0.100'), dhcpSize: 20, domain: 'lab.test', upstreams: [],
    staticHosts: [{ mac: DB, ip: '10.77.0.10', hostname: 'db' }],
    listen: [parseAttach(`unix:${sock}`)], ...extra,
  });
  t.after(() => { n.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  return { n, sock };
}

test('names: a rogue MAC asking for a registered VM\'s, a static host\'s or a leased name gets an address, not the name; DNS and forwards follow the owner', async (t) => {
  const { n, sock } = await lab(t);
  n.vmMacs.set('vm1', VM1); // what `qnet attach lab --name vm1` / `qnet run` records
  const vm1 = await RawGuest.connect(sock, VM1, GW);
  t.after(() => vm1.close());
  const good = await vm1.lease({ hostname: 'vm1' });
  assert.equal(good?.type, DHCP.ACK);
  const web = await RawGuest.connect(sock, WEB, GW);
  t.after(() => web.close());
  assert.equal((await web.lease({ hostname: 'web' }))?.type, DHCP.ACK, 'web is the first live lease with its name');

  const rogue = await RawGuest.connect(sock, ROGUE, GW);
  t.after(() => rogue.close());
  // the rogue asks for the registered VM's name first, then the others, renewing each time
  for (const name of ['vm1', 'web', 'db']) {
    const r = await rogue.lease({ hostname: name });
    assert.equal(r?.type, DHCP.ACK, `the rogue still gets an address when asking for ${name}`);
  }
  const lease = n.dhcp.leases().find((l) => l.mac === ROGUE)!;
  assert.equal(lease.hostname, undefined, 'the rogue\'s lease carries none of the names');
  assert.equal(n.dhcp.stats.nameRefused, 3);
  assert.equal(n.limits.count('dhcp.nameTaken'), 3);
  assert.equal(logLines.filter((l) => /limit reached: dhcp\.nameTaken/.test(l)).length, 1, 'logged once per interval for the port');

  // DNS (asked by the rogue itself) and addressOf give the owners
  assert.deepEqual((await rogue.resolve('vm1.lab.test', 1)).addrs, [vm1.ip]);
  assert.deepEqual((await rogue.resolve('web', 2)).addrs, [web.ip]);
  assert.deepEqual((await rogue.resolve('db.lab.test', 3)).addrs, [ip('10.77.0.10')]);
  assert.equal(n.addressOf('vm1'), vm1.ip);

  // a forward by name delivers the host's connection to the owner, never to the rogue
  vm1.listening.add(22);
  const fwd = await n.hostfwd.add({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guest: 'vm1', guestPort: 22 });
  const c = net.connect(fwd.boundPort, '127.0.0.1');
  c.on('error', () => {});
  t.after(() => c.destroy());
  await until(() => vm1.synsSeen.find((s) => s.dstPort === 22), 'the forwarded SYN at vm1');
  await rogue.barrier();
  assert.deepEqual(rogue.synsSeen, [], 'no SYN reached the rogue');

  // the well-behaved guests keep their names and addresses: renewals go through
  assert.equal((await vm1.lease({ hostname: 'vm1' }))?.yiaddr, vm1.ip);
  await vm1.ping();
  assert.equal(n.dhcp.leases().find((l) => l.mac === VM1)?.hostname, 'vm1');

  // a name held by a lease is free again once that lease is released: then the next asker gets it
  web.dhcp({ type: DHCP.RELEASE, chaddr: mac(WEB), xid: 9, ciaddr: web.ip, serverId: GW.ip });
  await web.barrier();
  assert.equal((await rogue.lease({ hostname: 'web' }))?.type, DHCP.ACK);
  assert.equal(n.dhcp.leases().find((l) => l.mac === ROGUE)?.hostname, 'web');
  assert.equal(n.addressOf('web'), rogue.ip, `the rogue (${ip4ToString(rogue.ip)}) owns the released name now`);
});

test('DHCP: one port with random MACs gets at most leasesPerPort addresses; another port still gets one', async (t) => {
  const { n, sock } = await lab(t);
  const rogue = await RawGuest.connect(sock, ROGUE, GW);
  t.after(() => rogue.close());
  const got: { chaddr: Buffer; ip: number }[] = [];
  for (let k = 0; k < 30; k++) {
    const m = mac(`52:54:00:ee:00:${k.toString(16).padStart(2, '0')}`);
    const r = await rogue.lease({ chaddr: m, adopt: false });
    if (r?.type === DHCP.ACK) got.push({ chaddr: m, ip: r.yiaddr });
  }
  assert.equal(got.length, 8, 'the default leasesPerPort');
  assert.equal(n.dhcp.stats.portLimited, 22);
  const port = [...n.sw.ports.keys()].find((p) => n.sw.macsOn(p).includes(ROGUE))!.name;
  assert.equal(n.limits.count('dhcp.leasesPerPort', port), 22, 'counted against the rogue\'s port');
  assert.equal(logLines.filter((l) => /limit reached: dhcp\.leasesPerPort/.test(l) && l.includes(port)).length, 1);

  // the pool (20) still has room for a well-behaved guest on another port
  const good = await RawGuest.connect(sock, VM1, GW);
  t.after(() => good.close());
  assert.equal((await good.lease())?.type, DHCP.ACK);
  await good.ping();
  // declines count against the port too: the rogue cannot drain the pool that way
  for (const g of got) rogue.dhcp({ type: DHCP.DECLINE, chaddr: g.chaddr, xid: 1, requested: g.ip, serverId: GW.ip }, g.chaddr);
  await rogue.barrier();
  assert.equal(n.dhcp.stats.decline, 8);
  assert.equal(await rogue.lease({ chaddr: mac('52:54:00:ee:01:00'), adopt: false }), null, 'the declined addresses still count against the port');

  // a closed port's holds are forgotten; the renewing good guest was never affected
  rogue.close();
  await until(() => n.sw.ports.size === 2, 'the rogue\'s port to go (the gateway and the good guest remain)');
  assert.equal((await good.lease())?.yiaddr, good.ip);
});

test('DHCP: leasesPerPort is configurable (0: no limit)', async (t) => {
  const { n, sock } = await lab(t, { maxLeasesPerPort: 2 });
  const g = await RawGuest.connect(sock, ROGUE, GW);
  t.after(() => g.close());
  let acks = 0;
  for (let k = 0; k < 4; k++) if ((await g.lease({ chaddr: mac(`52:54:00:ee:02:0${k}`), adopt: false }))?.type === DHCP.ACK) acks++;
  assert.equal(acks, 2);
  assert.equal(n.dhcp.stats.portLimited, 2);
});
