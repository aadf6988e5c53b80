// End-to-end: a kernel NAT network (`bridge:`), as root, inside test namespaces.
//
//   namespace H   the "host": qnet up with two kernel networks,
//                   lab    nat on bridge qnbr0, 10.91.0.0/24, allow: [nobody],
//                          forwards: tcp 8080 -> web:80, DNS upstream = I's server
//                   quiet  isolated on bridge qnbr1 (no allow list: only root)
//                 veth up0 198.51.100.2/24, default route via I
//   namespace I   the "internet" 198.51.100.1: a TCP service that answers with the peer address
//                 it saw, a DNS server (whoami.example.test answers with the querier's address,
//                 far.example.test a fixed one), ICMP echo counted by source in an nft table.
//                 I has no route to 10.91.0.0/24: only masqueraded traffic can be answered.
//
// Guests on lab:
//   web  plain QEMU as root, -netdev tap,script=qnet-ifup,downscript=qnet-ifdown; serves HTTP on
//        port 80 (the forward's target) and pings I five times a second (the restart check)
//   cli  `qnet run lab` as nobody (tap handed over by the daemon): lease, TCP/UDP/ICMP to I,
//        names through qnet's DNS, the forward by the host's address (hairpin)
//   hvm  QEMU as nobody with -netdev bridge,helper=qnet-bridge-helper: lease, gateway ping
// Refused: nobody's `qnet run quiet` and nobody's QEMU with br=qnbr1 fail with a one-line reason.
// Then: SIGTERM + start (web keeps pinging: at most a second of replies missing), kill -9 +
// start (the table is replaced, not doubled), and a final stop: H's `nft list ruleset` and links
// are exactly as before, IPv4 forwarding is off again.
//
// Safety: nothing leaves the namespaces; the only DNS server is the test's, in I.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { makeTempDir } from '../helpers/cleanup.ts';
import { createNetns, veth, type Netns } from '../helpers/netns.ts';
import { Daemon, RunGuest, qnet, qnetJson } from '../helpers/qnetd.ts';
import { GUEST_SH_LIB, startServicesIn } from '../helpers/user-net.ts';
import { guestMac } from '../helpers/guest.ts';
import { AS_NOBODY, BIN, NSLOOKUP_ADDR, addrOf, linkNames, nftCounters, nobodyEnv, openUp, pingReplies, plainQemu, readableImage, until } from '../helpers/kernel-net.ts';

const TOKEN = randomBytes(4).toString('hex');
const I_IP = '198.51.100.1';
const H_IP = '198.51.100.2';
const GW = '10.91.0.1';
const PAGE = `web-page-${TOKEN}`;
const root = process.getuid?.() === 0;
const haveNft = fs.existsSync('/usr/sbin/nft') || fs.existsSync('/sbin/nft');
const skip = !root ? 'needs root (namespaces, bridges, nftables)' : !haveNft ? 'needs nftables (apt-get install nftables)' : false;

const webScript = `${GUEST_SH_LIB}
udhcpc -f -i eth0 -t 5 -T 2 -x hostname:web -p /tmp/udhcpc.pid &
for i in $(seq 100); do ip -4 addr show eth0 | grep -q 'inet ' && break; sleep 0.2; done
echo QNET dhcp-rc $(ip -4 addr show eth0 | grep -q 'inet ' && echo 0 || echo 1)
mkdir -p /www && echo ${PAGE} > /www/index.html && httpd -p 80 -h /www
echo QNET ready
read ping
# a renew re-applies the lease (udhcpc's script deletes and adds the default route): a ping that
# sends in that moment gets ENETUNREACH and exits, so it is started again
( while :; do ping -i 0.2 ${I_IP}; sleep 0.2; done ) &
pingpid=$!
read renew
kill -USR1 $(cat /tmp/udhcpc.pid)
read done
kill $pingpid; killall ping 2>/dev/null
echo QNET finished
`;

const cliScript = `${GUEST_SH_LIB}
udhcpc -i eth0 -n -q -t 5 -T 2 -x hostname:cli
echo QNET dhcp-rc $?
echo QNET ready
read go
pingt inet ${I_IP}
echo QNET tcp $(echo hello-${TOKEN} | timeout 10 nc ${I_IP} 7000 2>&1 | oneline)
echo QNET udp $(timeout 10 nslookup whoami.example.test ${I_IP} 2>&1 | ${NSLOOKUP_ADDR})
echo QNET dns-far $(timeout 10 nslookup far.example.test 2>&1 | ${NSLOOKUP_ADDR})
echo QNET dns-web $(timeout 10 nslookup web 2>&1 | ${NSLOOKUP_ADDR})
echo QNET dns-webfq $(timeout 10 nslookup web.lab.test 2>&1 | ${NSLOOKUP_ADDR})
echo QNET fwd $(timeout 10 wget -q -O - http://${H_IP}:8080/ 2>&1 | oneline)
echo QNET checked
read done
echo QNET finished
`;

/** The tables of `nft list ruleset` output, sorted (replacing a table moves it to the end). */
function tables(text: string): string[] { return text.split(/^(?=table )/m).map((t) => t.trim()).filter(Boolean).sort(); }

const hvmScript = `${GUEST_SH_LIB}
udhcpc -i eth0 -n -q -t 5 -T 2 -x hostname:hvm
echo QNET dhcp-rc $?
pingt gw ${GW}
ping -c 3 ${GW}
echo QNET finished
`;

describe('kernel NAT network (bridge, nftables, taps) in namespaces', { skip, timeout: 300_000 }, () => {
  const dir = makeTempDir('e2e-knat-');
  const runtimeDir = path.join(dir.path, 'run');
  const stateDir = path.join(dir.path, 'state');
  const imageDir = path.join(dir.path, 'img');
  const cfgFile = path.join(dir.path, 'qnet.yaml');
  const api = path.join(runtimeDir, 'api.sock');
  let H: Netns;
  let I: Netns;
  let daemon: Daemon;
  const daemons: Daemon[] = [];
  const guests: RunGuest[] = [];
  let web: RunGuest;
  let cli: RunGuest;
  let hvm: RunGuest;
  let rulesetBefore = '';
  let linksBefore: string[] = [];
  let envNobody: NodeJS.ProcessEnv;
  const inH = () => ['ip', 'netns', 'exec', H.name];
  const startDaemon = async () => {
    const d = await Daemon.start({ config: cfgFile, runtimeDir, stateDir, api, prefix: inH() });
    daemons.push(d);
    return d;
  };

  before(async () => {
    if (skip) return;
    openUp(dir.path);
    fs.mkdirSync(imageDir);
    openUp(imageDir);
    envNobody = nobodyEnv(dir.path, { QNET_API: api });
    H = await createNetns();
    I = await createNetns();
    await veth(H, I, { nameA: 'up0', nameB: 'inet0', addrA: `${H_IP}/24`, addrB: `${I_IP}/24` });
    await H.addRoute('default', { via: I_IP });
    await startServicesIn(I, dir.path, {
      tcp: { addr: I_IP, port: 7000, prefix: `inet-${TOKEN}` },
      dns: { addr: I_IP, port: 53, table: { 'far.example.test': '203.0.113.7', 'whoami.example.test': 'SOURCE' } },
    });
    await I.run(['nft', '-f', '-'], {
      input: `table ip probe {\n chain in {\n  type filter hook input priority 0; policy accept;\n  ip saddr ${H_IP} icmp type echo-request counter comment "masqueraded"\n  ip saddr 10.91.0.0/24 counter comment "unmasqueraded"\n }\n}\n`,
    });
    fs.writeFileSync(cfgFile, `networks:
  - name: lab
    mode: nat
    bridge: qnbr0
    subnet: 10.91.0.0/24
    dhcp: 10.91.0.100-10.91.0.199
    domain: lab.test
    upstreams: [${I_IP}:53]
    allow: [nobody]
    forwards: [{ proto: tcp, hostPort: 8080, guest: web, guestPort: 80 }]
  - name: quiet
    mode: isolated
    bridge: qnbr1
    subnet: 10.93.0.0/24
`);
    rulesetBefore = await H.run(['nft', 'list', 'ruleset']);
    linksBefore = await linkNames(H);
    daemon = await startDaemon();
    web = await plainQemu(H, 'web', { script: webScript },
      ['-netdev', `tap,id=n0,script=${BIN}/qnet-ifup,downscript=${BIN}/qnet-ifdown`, '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(91)}`],
      { env: { ...process.env, QNET_API: api, QNET_NET: 'lab' } });
    cli = await RunGuest.start(undefined, 'lab', 'cli', { script: cliScript, accel: 'tcg' },
      { prefix: [...inH(), ...AS_NOBODY], env: envNobody, qemu: readableImage(imageDir) });
    hvm = await plainQemu(H, 'hvm', { script: hvmScript },
      ['-netdev', `bridge,id=n0,br=qnbr0,helper=${BIN}/qnet-bridge-helper`, '-device', `virtio-net-pci,netdev=n0,mac=${guestMac(92)}`],
      { asNobody: true, env: envNobody, imageDir });
    guests.push(web, cli, hvm);
    await Promise.all([web.waitFor(/^QNET ready$/m, 90_000), cli.waitFor(/^QNET ready$/m, 90_000)]);
  });

  after(async () => {
    for (const g of guests) await g.stop('SIGKILL');
    for (const d of daemons) await d.stop('SIGKILL');
    await H?.delete();
    await I?.delete();
    dir.remove();
  });

  test('guests get leases from qnet\'s DHCP on the bridge; the ports show in net show', async () => {
    assert.equal(web.value('dhcp-rc'), '0', web.diag());
    assert.equal(cli.value('dhcp-rc'), '0', cli.diag());
    assert.match(web.value('dhcp-ip') ?? '', /^10\.91\.0\.1\d\d$/, web.diag());
    assert.equal(web.value('dhcp-router'), GW);
    assert.equal(cli.value('dhcp-dns'), GW);
    await hvm.waitFor(/^QNET finished$/m, 90_000);
    assert.equal(hvm.value('dhcp-rc'), '0', hvm.diag());
    assert.deepEqual(hvm.results().get('ping-gw')?.slice(0, 1), ['0'], hvm.diag());
    assert.doesNotMatch(hvm.output, /DUP!/, 'only the kernel answers for the gateway address');
    const net = await qnetJson<{ ports: { vm?: string; kind: string; macs: string[]; uid?: number }[]; kernel: { bridge: string; createdBridge: boolean; rules: { rules: number } } }>(undefined, ['net', 'show', 'lab', '--api', api]);
    const byVm = Object.fromEntries(net.ports.map((p) => [p.vm, p]));
    assert.deepEqual(byVm.web?.macs, [guestMac(91)], JSON.stringify(net.ports));
    assert.equal(byVm.cli?.uid, 65534, 'the tap was made for nobody');
    assert.equal(byVm.cli?.kind, 'tap');
    assert.deepEqual([net.kernel.bridge, net.kernel.createdBridge], ['qnbr0', true]);
    assert.ok(net.kernel.rules.rules > 10);
    const leases = await qnetJson<{ hostname?: string; ip: string }[]>(undefined, ['leases', 'lab', '--api', api]);
    assert.deepEqual(leases.map((l) => l.hostname).sort(), ['cli', 'hvm', 'web']);
    const show = (await qnet(api, ['net', 'show', 'lab'])).stdout;
    assert.match(show, /^bridge: +qnbr0, made by qnet, MAC 02:71:6e(:[0-9a-f]{2}){3}$/m, show);
    assert.match(show, /^rules: +nftables table ip qnet-lab: \d+ rules; packets /m, show);
    assert.match(show, /^allow: +root, nobody$/m, show);
    assert.match(show, /^  qn-cli +tap +cli +65534 +52:54:00(:[0-9a-f]{2}){3} +10\.91\.0\.1\d\d +[1-9]\d* \([\d.]+ (B|KiB)\) +[1-9]\d* \(/m, show);
    const st = (await qnet(api, ['status'])).stdout;
    assert.match(st, /^lab +nat +10\.91\.0\.0\/24 +2 +3 +- +qnbr0$/m, st);
  });

  test('the nobody guest reaches the internet host by TCP, UDP and ICMP with the host\'s address as source', async () => {
    cli.write('go\n');
    await cli.waitFor(/^QNET checked$/m, 90_000);
    assert.deepEqual(cli.results().get('ping-inet')?.slice(0, 2), ['0', '3'], cli.diag());
    assert.equal(cli.value('tcp'), `inet-${TOKEN} from=${H_IP} hello-${TOKEN}`, cli.diag());
    assert.equal(addrOf(cli, 'udp'), H_IP, `UDP to I arrives from the host's address\n${cli.diag()}`);
    const c = await nftCounters(I, 'ip', 'probe');
    assert.equal(c.masqueraded, 3, 'I counted the 3 echo requests from the host\'s address');
    assert.equal(c.unmasqueraded, 0, 'nothing reached I with a guest address');
  });

  test('names resolve through qnet\'s DNS: guests by name and domain, the rest upstream', () => {
    assert.equal(addrOf(cli, 'dns-far'), '203.0.113.7', cli.diag());
    const webIp = web.value('dhcp-ip');
    assert.equal(addrOf(cli, 'dns-web'), webIp, cli.diag());
    assert.equal(addrOf(cli, 'dns-webfq'), webIp, cli.diag());
  });

  test('the forward reaches web from the internet namespace, from the host itself and from another guest', async () => {
    assert.equal(cli.value('fwd'), PAGE, `another guest, by the host's address\n${cli.diag()}`);
    assert.equal((await I.run(['busybox', 'wget', '-q', '-O', '-', `http://${H_IP}:8080/`])).trim(), PAGE, 'from the internet namespace');
    assert.equal((await H.run(['busybox', 'wget', '-q', '-O', '-', `http://${H_IP}:8080/`])).trim(), PAGE, 'from the host itself');
    assert.equal((await H.run(['busybox', 'wget', '-q', '-O', '-', `http://${GW}:8080/`])).trim(), PAGE, 'from the host, by the gateway address');
    const fw = await qnetJson<{ id: string; guest: string }[]>(undefined, ['forward', 'ls', 'lab', '--api', api]);
    assert.deepEqual(fw.map((f) => [f.id, f.guest]), [['tcp:0.0.0.0:8080', `web (${web.value('dhcp-ip')})`]]);
  });

  test('users not allowed get a one-line reason: qnet run and the bridge helper', async () => {
    const run = await qnet(api, ['run', 'quiet', '--name', 'nope', '--', 'qemu-system-x86_64', '-nodefaults'], { prefix: [...inH(), ...AS_NOBODY], env: envNobody });
    assert.equal(run.code, 1);
    assert.equal(run.stderr, "qnet run: nobody (uid 65534) may not attach VMs to network 'quiet': the network has no allow list (only root may attach VMs)\n");
    const q = await plainQemu(H, 'refused', { script: 'echo QNET never' },
      ['-netdev', `bridge,id=n0,br=qnbr1,helper=${BIN}/qnet-bridge-helper`, '-device', 'virtio-net-pci,netdev=n0'],
      { asNobody: true, env: envNobody, imageDir });
    guests.push(q);
    assert.notEqual(await q.exited, 0, 'QEMU fails');
    assert.match(q.stderr, /^qnet-bridge-helper: nobody \(uid 65534\) may not attach VMs to network 'quiet': the network has no allow list \(only root may attach VMs\)$/m);
    assert.match(q.stderr, /bridge helper failed/);
    assert.deepEqual((await linkNames(H)).filter((l) => l.startsWith('qn-') || l.startsWith('tap')).sort(), ['qn-cli', 'tap0'], 'no tap was left for the refused VM');
  });

  test('a guest keeps pinging across a daemon restart (at most a second lost); the table is replaced, not doubled', async () => {
    web.write('ping\n');
    await until(() => pingReplies(web, I_IP).length >= 5, 30_000, 'web pinging I', () => web.diag());
    const tableBefore = tables(await H.run(['nft', '-s', 'list', 'ruleset']));
    const n0 = pingReplies(web, I_IP).length;
    assert.equal(await daemon.stop('SIGTERM'), 0, daemon.stderr);
    assert.match(daemon.stderr, /kernel network left up for its VMs.*network=lab/);
    daemon = await startDaemon();
    await until(() => pingReplies(web, I_IP).length >= n0 + 15, 30_000, 'pings after the restart', () => web.diag());
    const seqs = pingReplies(web, I_IP).map((r) => r.seq);
    const window = seqs.slice(Math.max(0, n0 - 5));
    const missing = window[window.length - 1] - window[0] + 1 - window.length;
    console.log(`# restart: ${missing} of ${window[window.length - 1] - window[0] + 1} pings (0.2 s apart) missing around the restart`);
    assert.ok(missing <= 5, `at most a second of pings lost (missing ${missing})`);
    assert.deepEqual(tables(await H.run(['nft', '-s', 'list', 'ruleset'])), tableBefore, 'the same tables after the restart');
    assert.match(daemon.stderr, /adopted bridge qnbr0/);
    const leases = await qnetJson<{ hostname?: string }[]>(undefined, ['leases', 'lab', '--api', api]);
    assert.deepEqual(leases.map((l) => l.hostname).sort(), ['cli', 'hvm', 'web'], 'leases survive the restart');
    // a unicast renewal (to the bridge's address, through the packet socket) gets the same address
    const ip = web.value('dhcp-ip') ?? '';
    assert.match(ip, /^10\.91\.0\.1\d\d$/);
    const from = web.output.length;
    web.write('renew\n');
    await web.waitFor(/^QNET dhcp-done (renew|bound)$/m, 30_000, from);
    const renewed = web.output.slice(from);
    assert.match(renewed, new RegExp(`^QNET dhcp-ip ${ip.replace(/\./g, '\\.')}$`, 'm'), web.diag());
    assert.doesNotMatch(renewed, /dhcp-event (nak|deconfig)/, web.diag());
    const counters = (await qnetJson<{ counters: { bridge: { sockets: { dhcpUnicastDrained: number } } } }>(undefined, ['net', 'show', 'lab', '--api', api])).counters;
    assert.equal(counters.bridge.sockets.dhcpUnicastDrained, 1, 'the renewal was unicast to the bridge address (and the kernel did not answer it with port unreachable)');
  });

  test('after kill -9 and a new start the rules are not duplicated', async () => {
    const tableBefore = tables(await H.run(['nft', '-s', 'list', 'ruleset']));
    assert.equal(await daemon.stop('SIGKILL'), null);
    daemon = await startDaemon();
    const after = await H.run(['nft', '-s', 'list', 'ruleset']);
    assert.deepEqual(tables(after), tableBefore);
    assert.equal((after.match(/^table ip qnet-lab /gm) ?? []).length, 1);
    assert.equal((after.match(/^table ip qnet-quiet /gm) ?? []).length, 1);
    const n = pingReplies(web, I_IP).length;
    await until(() => pingReplies(web, I_IP).length >= n + 3, 60_000, 'web still pinging', () => web.diag());
  });

  test('after the VMs and then the daemon stop, the ruleset and the links are as before', async () => {
    web.write('done\n');
    cli.write('done\n');
    assert.equal(await cli.exited, 0, cli.diag());
    assert.equal(await web.exited, 0, web.diag());
    assert.match(web.stderr, /qnet ifup: tap0 is on network lab \(bridge qnbr0\)/);
    assert.match(web.stderr, /qnet ifdown: tap0 is off network lab/);
    assert.equal(await daemon.stop('SIGTERM'), 0, daemon.stderr);
    assert.match(daemon.stderr, /kernel network removed network=lab/);
    assert.equal(await H.run(['nft', 'list', 'ruleset']), rulesetBefore, 'nft list ruleset is exactly as before');
    assert.deepEqual(await linkNames(H), linksBefore, 'the links qnet made are gone');
    assert.equal((await H.run(['sysctl', '-n', 'net.ipv4.ip_forward'])).trim(), '0', 'forwarding is off again');
  });
});
