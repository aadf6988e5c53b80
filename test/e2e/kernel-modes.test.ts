// End-to-end: the other kernel-network modes, as root, inside test namespaces.
//
//   namespace H   qnet up with
//                   wan    routed on bridge qnbr2, 10.92.0.0/24 (I has a route to it via H)
//                   quiet  isolated on bridge qnbr3, 10.93.0.0/24, domain quiet.test
//                   lan    mode bridge: qnet makes qnbr4 and enslaves lan0, moving lan0's
//                          address (203.0.113.2/24) and its static route to the bridge
//                 veth up0 198.51.100.2/24 to I (default route), veth lan0 to L
//   namespace I   the "internet" 198.51.100.1: TCP service answering with the peer address
//   namespace L   a LAN: 203.0.113.1/24 with busybox udhcpd (pool .100-.150), the router for
//                 192.0.2.0/24 (an address on its lo)
//
// One guest per network (qnet run, root): routed is reachable from I and its source is not
// rewritten; isolated reaches its gateway and its own names and nothing beyond; the bridged
// guest leases from the LAN's udhcpd. H reaches the LAN before, during and after, and gets its
// address and route back on stop; the ruleset and links are as before.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { makeTempDir } from '../helpers/cleanup.ts';
import { createNetns, veth, type Netns } from '../helpers/netns.ts';
import { Daemon, RunGuest, qnetJson } from '../helpers/qnetd.ts';
import { GUEST_SH_LIB, startServicesIn } from '../helpers/user-net.ts';
import { NSLOOKUP_ADDR, addrOf, linkNames, until } from '../helpers/kernel-net.ts';

const TOKEN = randomBytes(4).toString('hex');
const I_IP = '198.51.100.1';
const H_IP = '198.51.100.2';
const L_IP = '203.0.113.1';
const H_LAN = '203.0.113.2';
const FAR = '192.0.2.9';
const root = process.getuid?.() === 0;
const haveNft = fs.existsSync('/usr/sbin/nft') || fs.existsSync('/sbin/nft');
const skip = !root ? 'needs root (namespaces, bridges, nftables)' : !haveNft ? 'needs nftables (apt-get install nftables)' : false;

const routedScript = `${GUEST_SH_LIB}
udhcpc -i eth0 -n -q -t 5 -T 2 -x hostname:rvm
echo QNET dhcp-rc $?
mkdir -p /www && echo routed-${TOKEN} > /www/index.html && httpd -p 80 -h /www
pingt inet ${I_IP}
echo QNET tcp $(echo hi | timeout 10 nc ${I_IP} 7000 2>&1 | oneline)
echo QNET ready
read done
`;

const isolatedScript = `${GUEST_SH_LIB}
udhcpc -i eth0 -n -q -t 5 -T 2 -x hostname:ivm
echo QNET dhcp-rc $?
pingt gw 10.93.0.1
pingt inet ${I_IP}
out=$(echo hi | timeout 10 nc ${I_IP} 7000 2>&1); echo QNET tcp $? $(echo "$out" | oneline)
echo QNET dns-self $(timeout 10 nslookup ivm.quiet.test 2>&1 | ${NSLOOKUP_ADDR})
out=$(timeout 10 nslookup far.example.test 2>&1); echo QNET dns-out $?
echo QNET ready
read done
`;

const lanScript = `${GUEST_SH_LIB}
udhcpc -i eth0 -n -q -t 5 -T 2 -x hostname:lvm
echo QNET dhcp-rc $?
pingt lan ${L_IP}
pingt far ${FAR}
echo QNET ready
read done
`;

describe('kernel routed, isolated and bridge-mode networks in namespaces', { skip, timeout: 300_000 }, () => {
  const dir = makeTempDir('e2e-kmodes-');
  const runtimeDir = path.join(dir.path, 'run');
  const stateDir = path.join(dir.path, 'state');
  const cfgFile = path.join(dir.path, 'qnet.yaml');
  const api = path.join(runtimeDir, 'api.sock');
  let H: Netns;
  let I: Netns;
  let L: Netns;
  let daemon: Daemon | undefined;
  const guests: RunGuest[] = [];
  let rvm: RunGuest;
  let ivm: RunGuest;
  let lvm: RunGuest;
  let rulesetBefore = '';
  let linksBefore: string[] = [];
  let lanMac = '';
  const inH = () => ['ip', 'netns', 'exec', H.name];
  let pinger: ReturnType<Netns['spawn']> | undefined;
  const lanSeqs: number[] = [];
  let lanPartial = '';

  before(async () => {
    if (skip) return;
    H = await createNetns();
    I = await createNetns();
    L = await createNetns();
    await veth(H, I, { nameA: 'up0', nameB: 'inet0', addrA: `${H_IP}/24`, addrB: `${I_IP}/24` });
    await veth(H, L, { nameA: 'lan0', nameB: 'lanL', addrA: `${H_LAN}/24`, addrB: `${L_IP}/24` });
    await H.addRoute('default', { via: I_IP });
    await H.addRoute('192.0.2.0/24', { via: L_IP });
    await L.addAddr('lo', `${FAR}/32`);
    await L.addRoute('10.0.0.0/8', { via: H_LAN }); // not used by the bridged guest (it is on the LAN)
    await I.addRoute('10.92.0.0/24', { via: H_IP }); // "given a route": the routed network
    await startServicesIn(I, dir.path, { tcp: { addr: I_IP, port: 7000, prefix: `inet-${TOKEN}` } });
    fs.writeFileSync(path.join(dir.path, 'udhcpd.conf'), `start 203.0.113.100\nend 203.0.113.150\ninterface lanL\nopt router ${L_IP}\nopt subnet 255.255.255.0\nlease_file ${path.join(dir.path, 'udhcpd.leases')}\npidfile ${path.join(dir.path, 'udhcpd.pid')}\n`);
    fs.writeFileSync(path.join(dir.path, 'udhcpd.leases'), '');
    L.spawn(['busybox', 'udhcpd', '-f', path.join(dir.path, 'udhcpd.conf')]);
    fs.writeFileSync(cfgFile, `networks:
  - name: wan
    mode: routed
    bridge: qnbr2
    subnet: 10.92.0.0/24
  - name: quiet
    mode: isolated
    bridge: qnbr3
    subnet: 10.93.0.0/24
    domain: quiet.test
  - name: lan
    mode: bridge
    bridge: qnbr4
    uplink: lan0
`);
    rulesetBefore = await H.run(['nft', 'list', 'ruleset']);
    linksBefore = await linkNames(H);
    lanMac = (JSON.parse(await H.ip('-json', 'link', 'show', 'lan0')) as { address: string }[])[0].address;
    await H.run(['busybox', 'ping', '-c1', '-W2', L_IP]);
    pinger = H.spawn(['busybox', 'ping', '-i', '0.2', L_IP]);
    pinger.stdout!.on('data', (d: Buffer) => {
      const lines = (lanPartial + d.toString()).split('\n');
      lanPartial = lines.pop()!;
      for (const l of lines) { const m = /seq=(\d+)/.exec(l); if (m) lanSeqs.push(Number(m[1])); }
    });
    daemon = await Daemon.start({ config: cfgFile, runtimeDir, stateDir, api, prefix: inH() });
    rvm = await RunGuest.start(api, 'wan', 'rvm', { script: routedScript }, { prefix: inH() });
    ivm = await RunGuest.start(api, 'quiet', 'ivm', { script: isolatedScript }, { prefix: inH() });
    lvm = await RunGuest.start(api, 'lan', 'lvm', { script: lanScript }, { prefix: inH() });
    guests.push(rvm, ivm, lvm);
    await Promise.all(guests.map((g) => g.waitFor(/^QNET ready$/m, 120_000)));
  });

  after(async () => {
    pinger?.kill('SIGKILL');
    for (const g of guests) await g.stop('SIGKILL');
    await daemon?.stop('SIGKILL');
    await H?.delete();
    await I?.delete();
    await L?.delete();
    dir.remove();
  });

  test('routed: the guest reaches I with its own address and is reachable from I', async () => {
    assert.equal(rvm.value('dhcp-rc'), '0', rvm.diag());
    const ip = rvm.value('dhcp-ip') ?? '';
    assert.match(ip, /^10\.92\.0\.\d+$/);
    assert.deepEqual(rvm.results().get('ping-inet')?.slice(0, 2), ['0', '3'], rvm.diag());
    assert.equal(rvm.value('tcp'), `inet-${TOKEN} from=${ip} hi`, 'the source is not rewritten');
    await I.run(['busybox', 'ping', '-c1', '-W2', ip]);
    assert.equal((await I.run(['busybox', 'wget', '-q', '-O', '-', `http://${ip}/`])).trim(), `routed-${TOKEN}`, 'I reaches the guest through the route');
    const net = await qnetJson<{ kernel: { rules: { chains: string[] } | null; forwarding: string } }>(api, ['net', 'show', 'wan']);
    assert.ok(net.kernel.rules?.chains.includes('guest_input'));
    assert.ok(!net.kernel.rules?.chains.includes('guest_nat'), 'no NAT chain on a routed network');
    assert.equal(net.kernel.forwarding, '1');
  });

  test('isolated: gateway and own names yes, the outside no', () => {
    assert.equal(ivm.value('dhcp-rc'), '0', ivm.diag());
    assert.deepEqual(ivm.results().get('ping-gw')?.slice(0, 2), ['0', '3'], ivm.diag());
    assert.deepEqual(ivm.results().get('ping-inet')?.slice(0, 2), ['1', '0'], ivm.diag());
    assert.notEqual(ivm.results().get('tcp')?.[0], '0', `TCP to I fails\n${ivm.diag()}`);
    assert.equal(addrOf(ivm, 'dns-self'), ivm.value('dhcp-ip'), ivm.diag());
    assert.notEqual(ivm.results().get('dns-out')?.[0], '0', 'outside names do not resolve');
  });

  test('bridge mode: the guest leases from the LAN\'s own DHCP server; the host keeps the LAN', async () => {
    assert.equal(lvm.value('dhcp-rc'), '0', lvm.diag());
    assert.match(lvm.value('dhcp-ip') ?? '', /^203\.0\.113\.1\d\d$/, lvm.diag());
    assert.equal(lvm.value('dhcp-router'), L_IP);
    assert.deepEqual(lvm.results().get('ping-lan')?.slice(0, 2), ['0', '3'], lvm.diag());
    assert.deepEqual(lvm.results().get('ping-far')?.slice(0, 2), ['0', '3'], lvm.diag());
    // the host: its address and route are on the bridge now, with the NIC's MAC
    const br = JSON.parse(await H.ip('-json', 'addr', 'show', 'qnbr4')) as { address: string; addr_info: { family: string; local: string }[] }[];
    assert.equal(br[0].address, lanMac, 'the bridge has the uplink\'s MAC');
    assert.deepEqual(br[0].addr_info.filter((a) => a.family === 'inet').map((a) => a.local), [H_LAN]);
    assert.match(await H.ip('route', 'get', FAR), /via 203\.0\.113\.1 dev qnbr4/);
    await H.run(['busybox', 'ping', '-c1', '-W2', FAR]);
    const net = await qnetJson<{ ports: { vm?: string }[]; kernel: { uplink?: string; rules: unknown } }>(api, ['net', 'show', 'lan']);
    assert.equal(net.kernel.uplink, 'lan0');
    assert.equal(net.kernel.rules, null, 'no table in bridge mode');
    assert.deepEqual(net.ports.map((p) => p.vm), ['lvm'], 'the uplink is not listed as a VM port');
  });

  test('stop: the host gets its LAN address and route back; ruleset and links as before', async () => {
    for (const g of guests) g.write('done\n');
    for (const g of guests) await g.exited;
    assert.equal(await daemon!.stop('SIGTERM'), 0, daemon!.stderr);
    const lan0 = JSON.parse(await H.ip('-json', 'addr', 'show', 'lan0')) as { master?: string; addr_info: { family: string; local: string; prefixlen: number }[] }[];
    assert.equal(lan0[0].master, undefined);
    assert.deepEqual(lan0[0].addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), [`${H_LAN}/24`]);
    assert.match(await H.ip('route', 'get', FAR), /via 203\.0\.113\.1 dev lan0/);
    await H.run(['busybox', 'ping', '-c1', '-W2', L_IP]);
    const n = lanSeqs.length;
    await until(() => lanSeqs.length >= n + 3, 10_000, 'the host pinging the LAN after the stop');
    pinger!.kill('SIGKILL');
    const missing = lanSeqs[lanSeqs.length - 1] - lanSeqs[0] + 1 - lanSeqs.length;
    console.log(`# bridge mode: the host's pings to the LAN while its address moved to the bridge and back: ${missing} of ${lanSeqs.length + missing} missing`);
    assert.ok(missing <= 5, `the host kept reaching the LAN (at most a second of pings lost; ${missing} missing)`);
    assert.equal(await H.run(['nft', 'list', 'ruleset']), rulesetBefore);
    assert.deepEqual(await linkNames(H), linksBefore);
    assert.equal((await H.run(['sysctl', '-n', 'net.ipv4.ip_forward'])).trim(), '0');
  });
});
