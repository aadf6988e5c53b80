// "Without root" (README): the commands that need no root run as an ordinary user. As root,
// this test becomes nobody:nogroup with no supplementary groups (setpriv) for qnet and for
// QEMU (plus the group of /dev/kvm when the guests use KVM, as a desktop user has it);
// otherwise it runs them as whoever runs the tests.
//
//   qnet switch   two stream peers exchange frames; the pcap file is written
//   qnet user     a guest gets DHCP, ping of the gateway, DNS through the test's server, NAT to
//                 a loopback HTTP server; hostfwd and a runtime forward (qnet forward --api, also
//                 as that user) reach its httpd
//   qnet up       its runtime and state directories from XDG_*, a nat network; a guest started
//                 with qnet run (as that user) gets an address, NAT and a forward by VM name
//
// Everything the user needs is made for it: a work directory it owns (sockets, runtime and
// state directories, HOME, the config), and for QEMU copies of the guest kernel and initrd it
// can read (the image cache sits in root's 0700 home).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { makeTempDir } from '../helpers/cleanup.ts';
import { bootGuest, detectAccel, guestMac, runAsArgv, type Guest, type RunAs } from '../helpers/guest.ts';
import { Daemon, RunGuest, qnet, qnetJson } from '../helpers/qnetd.ts';
import { QnetSwitch } from '../helpers/qnet-switch.ts';
import { QnetUser, freeTcpPort, startDns, startHttp, streamNic, type TestDns } from '../helpers/user-net.ts';
import { StreamPeer, makeFrame } from '../link/peers.ts';
import { waitFor } from '../helpers/wait.ts';

const isRoot = process.getuid?.() === 0;
const TOKEN = randomBytes(4).toString('hex');
const HTTP_BODY = `unpriv-host-${TOKEN}`;
const GUEST_PAGE = `unpriv-guest-${TOKEN}`;

/** The real uid of a process (from /proc). */
function uidOf(pid: number): number {
  return Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

describe('without root: qnet switch, qnet user and qnet up as an ordinary user', { timeout: 600_000 }, () => {
  const dir = makeTempDir('unpriv-');
  let user: RunAs | undefined;
  let prefix: string[] = [];
  let env: NodeJS.ProcessEnv = {};
  let uid = process.getuid?.() ?? 0;
  let dns: TestDns;
  let httpSrv: Awaited<ReturnType<typeof startHttp>>;
  // qnet user, its socket and API in the work directory
  const userSock = join(dir.path, 'user.sock');
  const userApi = join(dir.path, 'user.api');
  let q: QnetUser;
  let ug: Guest;
  let hostfwd = 0;
  // qnet up, its runtime directory from XDG_RUNTIME_DIR
  const runtimeDir = join(dir.path, 'run', 'qnet');
  const upApi = join(runtimeDir, 'api.sock');
  let d: Daemon;
  let rg: RunGuest;

  /** qnet user and a guest on it, up to the guest's httpd. */
  async function startUser(): Promise<void> {
    hostfwd = await freeTcpPort();
    q = await QnetUser.start(`hostname=unpriv,hostfwd=tcp:127.0.0.1:${hostfwd}-:80,dnsupstream=127.0.0.1:${dns.port}`, userSock, undefined, ['--api', userApi], { prefix, env });
    ug = await bootGuest({
      name: 'unpriv-user', netArgs: streamNic(userSock, guestMac(61)), timeoutMs: 200_000, runAs: user,
      script: `udhcpc -i eth0 -n -q -t 5 -T 2
echo QNET dhcp-rc $?
ping -c 2 -W 5 10.0.2.2 >/dev/null 2>&1; echo QNET ping-gw $?
echo QNET nat $(timeout 10 wget -q -O - http://10.0.2.2:${httpSrv.port}/user 2>&1 | tr '\\n' ' ')
out=$(nslookup probe.unpriv.test 2>&1); echo QNET dns $? $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
mkdir -p /www && echo ${GUEST_PAGE} > /www/index.html && httpd -p 80 -h /www
echo QNET up
read done
`,
    });
    await ug.waitFor(/^QNET up$/m, 400_000);
  }

  /** qnet up with a nat network and a guest through qnet run, up to the guest's httpd. */
  async function startUp(): Promise<void> {
    const cfg = join(dir.path, 'qnet.yaml');
    fs.writeFileSync(cfg, `networks:
  - name: lab
    mode: nat
    subnet: 10.81.0.0/24
    domain: lab.test
    upstreams: [127.0.0.1:${dns.port}]
`);
    d = await Daemon.start({ config: cfg, api: upApi, env, prefix });
    rg = await RunGuest.start(upApi, 'lab', 'uvm', {
      runAs: user,
      script: `udhcpc -i eth0 -n -q -t 5 -T 2 -x hostname:uvm
echo QNET dhcp-rc $?
echo QNET nat $(timeout 10 wget -q -O - http://10.81.0.1:${httpSrv.port}/up 2>&1 | tr '\\n' ' ')
mkdir -p /www && echo ${GUEST_PAGE} > /www/index.html && httpd -p 80 -h /www
echo QNET up
read done
`,
    }, { prefix, env });
    await rg.waitFor(/^QNET up$/m, 400_000);
  }

  before(async () => {
    if (isRoot) {
      const groups = (await detectAccel()) === 'kvm' ? [fs.statSync('/dev/kvm').gid] : [];
      user = { uid: 65534, gid: 65534, groups };
      prefix = runAsArgv(user);
      uid = 65534;
    }
    for (const d of ['home', 'run', 'state']) fs.mkdirSync(join(dir.path, d), { mode: 0o700 });
    for (const d of ['', 'home', 'run', 'state']) fs.chownSync(join(dir.path, d), uid, user?.gid ?? process.getgid!());
    env = { HOME: join(dir.path, 'home'), XDG_RUNTIME_DIR: join(dir.path, 'run'), XDG_STATE_HOME: join(dir.path, 'state'), QNET_API: '' };
    dns = await startDns({ 'probe.unpriv.test': '192.0.2.66' });
    httpSrv = await startHttp(HTTP_BODY);
    // both guests boot at once
    await Promise.all([startUser(), startUp()]);
  });

  after(async () => {
    await ug?.kill();
    q?.kill();
    await rg?.stop('SIGKILL');
    await d?.stop();
    dns?.close();
    httpSrv?.close();
    dir.remove();
  });

  test('qnet switch: two stream peers exchange frames; the pcap is written', async () => {
    const sock = join(dir.path, 'sw.sock');
    const pcap = join(dir.path, 'sw.pcap');
    const sw = await QnetSwitch.start(['--listen', `unix:${sock}`, '--pcap', pcap], 1, prefix, env);
    try {
      assert.equal(uidOf(sw.pid), uid, 'qnet switch runs as the ordinary user');
      const a = await StreamPeer.connect(sock);
      const b = await StreamPeer.connect(sock);
      await waitFor(async () => (await sw.stats()).ports.length === 2, { what: 'two ports' });
      a.send(makeFrame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:0a', 60, 0x88b5, 1));
      await waitFor(() => b.frames.length > 0, { what: "a's broadcast at b" });
      b.send(makeFrame('02:00:00:00:00:0a', '02:00:00:00:00:0b', 60, 0x88b5, 2));
      await waitFor(() => a.frames.some((f) => f[20] === 2), { what: "b's unicast at a" });
      a.close();
      b.close();
      const { code } = await sw.stopWithStats();
      assert.equal(code, 0);
      assert.equal(fs.statSync(pcap).uid, uid, 'the capture belongs to the user');
      assert.equal(fs.statSync(pcap).size, 24 + 2 * (16 + 60), 'the pcap header and both frames');
    } finally {
      sw.kill();
    }
  });

  test('qnet user: it and QEMU run as the ordinary user', () => {
    assert.equal(uidOf(q.pid), uid);
    assert.equal(uidOf(ug.pid), uid);
  });

  test('qnet user: the guest gets DHCP, a gateway that answers pings, DNS and NAT to the host loopback', () => {
    const r = ug.results();
    assert.deepEqual(r.get('dhcp-rc'), ['0'], ug.output);
    assert.deepEqual(r.get('dhcp-ip'), ['10.0.2.15']);
    assert.deepEqual(r.get('dhcp-hostname'), ['unpriv']);
    assert.deepEqual(r.get('ping-gw'), ['0'], ug.output);
    assert.deepEqual(r.get('nat'), [HTTP_BODY], ug.output);
    assert.deepEqual(r.get('dns'), ['0', '192.0.2.66'], ug.output);
    assert.ok(httpSrv.requests.includes('/user'));
  });

  test('qnet user: hostfwd, and a forward added at run time through --api by the same user, reach the guest', async () => {
    assert.equal((await (await fetch(`http://127.0.0.1:${hostfwd}/`)).text()).trim(), GUEST_PAGE);
    const port = await freeTcpPort();
    const add = await qnet(userApi, ['forward', 'add', 'user', `tcp:${port}`, '10.0.2.15:80'], { prefix, env });
    assert.equal(add.code, 0, add.stderr);
    assert.equal((await (await fetch(`http://127.0.0.1:${port}/`)).text()).trim(), GUEST_PAGE);
    assert.equal((await qnet(userApi, ['forward', 'rm', 'user', `tcp:${port}`], { prefix, env })).code, 0);
    ug.write('done\n');
    assert.equal(await ug.waitForExit(30_000), 0);
    assert.equal(await q.stop(), 0);
  });

  test('qnet up: the daemon, qnet run and QEMU run as the ordinary user; runtime and state directories come from XDG_*', async () => {
    assert.equal(uidOf(d.pid), uid);
    assert.equal(uidOf(rg.pid), uid);
    const vm = (await qnetJson<{ name: string; pid: number }[]>(upApi, ['vm', 'ls']))[0];
    assert.equal(vm?.name, 'uvm');
    assert.equal(uidOf(vm.pid), uid, 'QEMU too');
    const st = await qnetJson<{ runtimeDir: string; stateDir: string }>(upApi, ['status']);
    assert.deepEqual([st.runtimeDir, st.stateDir], [runtimeDir, join(dir.path, 'state', 'qnet')]);
    assert.equal(fs.statSync(upApi).uid, uid);
    assert.equal(fs.statSync(upApi).mode & 0o777, 0o600);
  });

  test('qnet up: the guest gets an address and reaches the host through NAT', async () => {
    assert.deepEqual(rg.results().get('dhcp-rc'), ['0'], rg.diag());
    assert.match(rg.value('dhcp-ip') ?? '', /^10\.81\.0\.\d+$/);
    assert.equal(rg.value('nat'), HTTP_BODY, rg.diag());
    const leases = await qnetJson<{ hostname?: string; ip: string }[]>(upApi, ['leases', 'lab']);
    assert.deepEqual(leases.map((l) => [l.hostname, l.ip]), [['uvm', rg.value('dhcp-ip')]]);
  });

  test('qnet up: a forward by VM name, added by the same user, reaches its httpd; the state is saved on stop', async () => {
    const port = await freeTcpPort();
    const add = await qnet(upApi, ['forward', 'add', 'lab', `tcp:${port}`, 'uvm:80'], { prefix, env });
    assert.equal(add.code, 0, add.stderr);
    assert.equal((await (await fetch(`http://127.0.0.1:${port}/`)).text()).trim(), GUEST_PAGE);
    rg.write('done\n');
    assert.equal(await rg.exited, 0, rg.diag());
    assert.equal(await d.stop('SIGTERM'), 0, d.stderr);
    const state = join(dir.path, 'state', 'qnet', 'state.json');
    assert.equal(fs.statSync(state).uid, uid);
    assert.ok((JSON.parse(fs.readFileSync(state, 'utf8')) as { networks: { lab: { macs: Record<string, string> } } }).networks.lab.macs.uvm);
  });
});
