// End-to-end acceptance of the daemon (`qnet up`) with real QEMU guests started by `qnet run`.
//
// One daemon (a child process, temp runtime/state dirs, a temp qnet.yaml) with two networks:
//
//   lab    nat       10.77.0.0/24, DHCP .100-.199, domain lab.test, DNS upstream = this test's
//                    loopback DNS server; vm3 is a static host (its MAC is learned first with
//                    `qnet attach lab --name vm3`, then the config gets `hosts:` and SIGHUP)
//   quiet  isolated  10.78.0.0/24, domain quiet.test
//   api: { tcp: 127.0.0.1:PORT, token }
//
// lab: three guests (vm1 sends its hostname in DHCP, vm2 sends none and is known by its
// `qnet run --name`, vm3 is named by the config) get distinct addresses (vm3 its reserved one),
// ping each other by name and fetch each other's busybox httpd as NAME and NAME.lab.test,
// reach a loopback HTTP server through NAT at the gateway address and resolve an outside name
// through the test's DNS server, and resolve the config's `records:` name (www, www.lab.test).
// The test checks `qnet leases/net show/vm ls --json`, `qnet info network` and /metrics, a
// `qnet forward add` to vm2's httpd that works from the host and is refused again after
// `qnet forward rm`, and `qnet capture lab --port vm2` (read back with tshark: vm2's frames only).
// quiet: two guests reach each other by name; the gateway answers pings; TCP and UDP to the
// host's loopback services through the gateway address are refused (RST, ICMP port
// unreachable; counted), and outside names do not resolve.
// API access: the unix socket is refused to another user (EACCES, also with the directory
// opened up; skipped when not root), the TCP API answers only with the bearer token.
//
// One daemon and one boot per network for the whole file; each behaviour is its own test, in
// order (later ones use what earlier ones set up, e.g. the reload gives vm3 its address).
//
// Safety: every service is on 127.0.0.1, the DNS upstream is the test's own server, and the
// guests never send anything to addresses outside their networks except the gateway.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { makeTempDir } from '../helpers/cleanup.ts';
import { Daemon, QNET, RunGuest, qnet, qnetJson, tcpListeners } from '../helpers/qnetd.ts';
import { waitFor } from '../helpers/wait.ts';
import { freeTcpPort, repoRoot, startDns, startHttp, type TestDns } from '../helpers/user-net.ts';

const TOKEN = randomBytes(4).toString('hex');
const API_TOKEN = randomBytes(16).toString('hex');
const HTTP_BODY = `host-page-${TOKEN}`;
const OUTSIDE = 'outside.example.test';
const OUTSIDE_ISO = 'outside-iso.example.test';
const DNS_TABLE = { [OUTSIDE]: '192.0.2.77', [OUTSIDE_ISO]: '192.0.2.78' };
const LAB_GW = '10.77.0.1';
const QUIET_GW = '10.78.0.1';
const STATIC_IP = '10.77.0.10';
/** a `records:` entry of the config: a name with no VM behind it */
const RECORD = 'www';
const RECORD_IP = '10.77.0.42';

const page = (vm: string): string => `page-${vm}-${TOKEN}`;

const prelude = `
oneline() { tr '\\n' ' ' | tr -s ' '; }
pingt() { ping -c 2 -W 5 $2 >/dev/null 2>&1; echo "QNET ping-$1 $?"; }
`;

/** A lab guest: DHCP, httpd with its page, then (on `go`) the peer and NAT checks. */
function labScript(vm: string, peers: string[], httpPort: number, sendHostname: boolean): string {
  return prelude + `
udhcpc -i eth0 -n -q -t 5 -T 2 ${sendHostname ? `-x hostname:${vm}` : ''}
echo QNET dhcp-rc $?
mkdir -p /www && echo ${page(vm)} > /www/index.html && httpd -p 80 -h /www
echo QNET ready
read go
${peers.map((p) => `
pingt ${p} ${p}
echo QNET http-${p} $(timeout 10 wget -q -O - http://${p}/ 2>&1 | oneline)
echo QNET httpfq-${p} $(timeout 10 wget -q -O - http://${p}.lab.test/ 2>&1 | oneline)
echo QNET nc-${p} $(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 10 nc ${p} 80 2>&1 | tail -1 | oneline)`).join('\n')}
pingt gw ${LAB_GW}
echo QNET nat $(timeout 10 wget -q -O - http://${LAB_GW}:${httpPort}/${vm} 2>&1 | oneline)
out=$(nslookup ${OUTSIDE} 2>&1); rc=$?
echo QNET dns-out $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
for n in ${RECORD} ${RECORD}.lab.test; do
  out=$(nslookup $n 2>&1); rc=$?
  echo QNET record-$n $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
done
echo QNET checked
read done
echo QNET finished
`;
}

/** A quiet (isolated) guest. */
function quietScript(vm: string, peer: string, httpPort: number, dnsPort: number): string {
  return prelude + `
udhcpc -i eth0 -n -q -t 5 -T 2 -x hostname:${vm}
echo QNET dhcp-rc $?
mkdir -p /www && echo ${page(vm)} > /www/index.html && httpd -p 80 -h /www
echo QNET ready
read go
pingt ${peer} ${peer}
echo QNET http-${peer} $(timeout 10 wget -q -O - http://${peer}/ 2>&1 | oneline)
echo QNET httpfq-${peer} $(timeout 10 wget -q -O - http://${peer}.quiet.test/ 2>&1 | oneline)
pingt gw ${QUIET_GW}
out=$(timeout 10 wget -q -O - http://${QUIET_GW}:${httpPort}/${vm} 2>&1); rc=$?
echo QNET out-tcp $rc $(echo "$out" | oneline)
out=$(echo x | timeout 10 nc ${QUIET_GW} ${httpPort} 2>&1); echo QNET out-nc $? $(echo "$out" | oneline)
out=$(timeout 10 nslookup ${OUTSIDE_ISO} 2>&1); rc=$?
echo QNET dns-out $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
out=$(timeout 10 nslookup ${OUTSIDE_ISO} ${QUIET_GW}:${dnsPort} 2>&1); rc=$?
echo QNET udp-out $rc $(echo "$out" | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)
echo QNET checked
`;
}

function configText(o: { dnsPort: number; apiPort: number; hosts?: string }): string {
  return `# e2e-daemon test config
api: { tcp: "127.0.0.1:${o.apiPort}", token: "${API_TOKEN}" }
networks:
  - name: lab
    mode: nat
    subnet: 10.77.0.0/24
    gateway: ${LAB_GW}
    dhcp: 10.77.0.100-10.77.0.199
    domain: lab.test
    upstreams: [127.0.0.1:${o.dnsPort}]
    records: [{ name: ${RECORD}, ip: ${RECORD_IP} }]
${o.hosts ? `    hosts: ${o.hosts}\n` : ''}  - name: quiet
    mode: isolated
    subnet: 10.78.0.0/24
    gateway: ${QUIET_GW}
    domain: quiet.test
`;
}

/** GET over the unix socket or TCP; status and body. */
function httpGet(o: { socketPath?: string; port?: number; path: string; headers?: http.OutgoingHttpHeaders }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...(o.socketPath ? { socketPath: o.socketPath } : { host: '127.0.0.1', port: o.port }), path: o.path, headers: o.headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** GET http://127.0.0.1:port/ from the host; the body, or 'ERR <code>'. */
async function fetchText(port: number): Promise<string> {
  try {
    return (await httpGet({ port, path: '/' })).body.trim();
  } catch (e) {
    return `ERR ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
}

/** tshark -r FILE ARGS: the tab-separated fields of each frame. */
function tshark(file: string, args: string[]): Promise<string[][]> {
  return new Promise((resolve, reject) => {
    execFile('tshark', ['-r', file, ...args], { maxBuffer: 16 << 20 }, (e, out, err) => {
      if (e) reject(new Error(`tshark: ${e.message}\n${err}`));
      else resolve(out.split('\n').filter(Boolean).map((l) => l.split('\t')));
    });
  });
}

/** Run `node -e CODE` as nobody:nogroup without supplementary groups; its stdout. */
function asNobody(code: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', code], { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d));
    c.stderr.on('data', (d: Buffer) => (err += d));
    const t = setTimeout(() => c.kill('SIGKILL'), 15_000);
    c.on('error', reject);
    c.on('close', (rc) => { clearTimeout(t); rc === 0 ? resolve(out.trim()) : reject(new Error(`as nobody: exit ${rc}: ${err}`)); });
  });
}

/** A node one-liner that GETs /v1/status over the socket and prints the status or the error code. */
const probeSocket = (sock: string): string =>
  `require('http').get({socketPath:${JSON.stringify(sock)},path:'/v1/status'},r=>{console.log('HTTP '+r.statusCode);r.resume()}).on('error',e=>console.log(e.code))`;

const isRoot = process.getuid?.() === 0;

describe('qnet up with real QEMU guests', { timeout: 600_000 }, () => {
  const dir = makeTempDir('e2e-daemon-');
  const runtimeDir = join(dir.path, 'run');
  const stateDir = join(dir.path, 'state');
  const cfgFile = join(dir.path, 'qnet.yaml');
  const api = join(runtimeDir, 'api.sock');
  let daemon: Daemon;
  let dns: TestDns;
  let httpSrv: Awaited<ReturnType<typeof startHttp>>;
  let apiPort = 0;
  let vm3Mac = '';
  const guests: RunGuest[] = [];

  before(async () => {
    // the temp dir itself is world-traversable, so only the daemon's own modes keep others out
    chmodSync(dir.path, 0o755);
    dns = await startDns(DNS_TABLE);
    httpSrv = await startHttp(HTTP_BODY);
    apiPort = await freeTcpPort();
    writeFileSync(cfgFile, configText({ dnsPort: dns.port, apiPort }));
    daemon = await Daemon.start({ config: cfgFile, runtimeDir, stateDir, api });
  });

  after(async () => {
    await Promise.all(guests.map((g) => g.stop('SIGKILL')));
    await daemon?.stop();
    dns?.close();
    httpSrv?.close();
    dir.remove();
  });

  test('qnet attach gives a VM name a stable MAC', async () => {
    const att = await qnetJson<{ mac: string; args: string[] }>(api, ['attach', 'lab', '--name', 'vm3']);
    vm3Mac = att.mac;
    assert.match(vm3Mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.deepEqual(await qnetJson(api, ['attach', 'lab', '--name', 'vm3']).then((a: { mac: string }) => a.mac), vm3Mac, 'the same name gets the same MAC');
  });

  test('SIGHUP reloads the config: the changed network restarts with a static host', async () => {
    // reserve an address and a name for vm3's MAC
    const from = daemon.stderr.length;
    writeFileSync(cfgFile, configText({ dnsPort: dns.port, apiPort, hosts: `[{ mac: "${vm3Mac}", ip: ${STATIC_IP}, name: vm3 }]` }));
    process.kill(daemon.pid, 'SIGHUP');
    await daemon.waitLog(/config reloaded/, 10_000, from);
    assert.match(daemon.stderr.slice(from), /restarted=.*lab/);
  });

  describe('a nat network with three guests', () => {
    const names = ['vm1', 'vm2', 'vm3'];
    const lab: RunGuest[] = [];
    let ips: string[] = [];
    let macs = new Map<string, string>();

    before(async () => {
      for (const vm of names) {
        const peers = names.filter((n) => n !== vm);
        const g = await RunGuest.start(api, 'lab', vm, { script: labScript(vm, peers, httpSrv.port, vm === 'vm1') });
        lab.push(g);
        guests.push(g);
      }
      await Promise.all(lab.map((g) => g.waitFor(/^QNET ready$/m, 180_000)));
      ips = lab.map((g) => g.value('dhcp-ip') ?? '');
      for (const g of lab) g.write('go\n');
      await Promise.all(lab.map((g) => g.waitFor(/^QNET checked$/m, 270_000)));
    });

    test('DHCP: distinct addresses from the range; the static host gets its reserved address and name', () => {
      const vm3 = lab[2];
      for (const g of lab) assert.equal(g.value('dhcp-rc'), '0', g.diag());
      assert.equal(ips[2], STATIC_IP, vm3.diag());
      for (const ip of ips.slice(0, 2)) {
        const m = /^10\.77\.0\.(\d+)$/.exec(ip);
        assert.ok(m && +m[1] >= 100 && +m[1] <= 199, `dynamic address ${ip} in 10.77.0.100-199`);
      }
      assert.equal(new Set(ips).size, 3, `distinct addresses: ${ips.join(' ')}`);
      for (const g of lab) {
        assert.equal(g.value('dhcp-router'), LAB_GW);
        assert.equal(g.value('dhcp-dns'), LAB_GW);
        assert.equal(g.value('dhcp-domain'), 'lab.test');
      }
      assert.equal(vm3.value('dhcp-hostname'), 'vm3', 'the static host gets its name from the config');
    });

    test('guests ping and fetch each other as NAME and NAME.lab.test', () => {
      for (const g of lab) {
        const r = g.results();
        const d = g.diag();
        for (const p of names.filter((n) => n !== g.name)) {
          assert.deepEqual(r.get(`ping-${p}`), ['0'], `${g.name} pings ${p} by name\n${d}`);
          assert.equal(r.get(`http-${p}`)?.join(' '), page(p), `${g.name} fetches http://${p}/\n${d}`);
          assert.equal(r.get(`httpfq-${p}`)?.join(' '), page(p), `${g.name} fetches http://${p}.lab.test/\n${d}`);
          assert.equal(r.get(`nc-${p}`)?.join(' '), page(p), `${g.name} nc ${p} 80\n${d}`);
        }
      }
    });

    test('the gateway answers pings; NAT reaches a loopback service at the gateway address', () => {
      for (const g of lab) {
        const r = g.results();
        assert.deepEqual(r.get('ping-gw'), ['0'], `${g.name} pings the gateway\n${g.diag()}`);
        assert.equal(r.get('nat')?.join(' '), HTTP_BODY, `${g.name} reaches the loopback HTTP server through NAT\n${g.diag()}`);
      }
      assert.deepEqual(httpSrv.requests.slice().sort(), ['/vm1', '/vm2', '/vm3']);
    });

    test('outside names resolve through the upstream; local names never go upstream', () => {
      for (const g of lab) assert.deepEqual(g.results().get('dns-out'), ['0', DNS_TABLE[OUTSIDE]], `${g.name} resolves an outside name through the upstream\n${g.diag()}`);
      assert.ok(dns.queries.some((q) => q === OUTSIDE), `the test DNS server saw ${OUTSIDE}: ${dns.queries.join(' ')}`);
      assert.ok(!dns.queries.some((q) => /^vm\d/.test(q)), `local names never go upstream: ${dns.queries.join(' ')}`);
    });

    test('config records: resolve as NAME and NAME.lab.test, answered by the daemon', () => {
      for (const g of lab) {
        const r = g.results();
        assert.deepEqual(r.get(`record-${RECORD}`), ['0', RECORD_IP], `${g.name}: nslookup ${RECORD}\n${g.diag()}`);
        assert.deepEqual(r.get(`record-${RECORD}.lab.test`), ['0', RECORD_IP], `${g.name}: nslookup ${RECORD}.lab.test\n${g.diag()}`);
      }
      assert.ok(!dns.queries.some((q) => q.startsWith(RECORD)), `records never go upstream: ${dns.queries.join(' ')}`);
    });

    test('qnet leases --json', async () => {
      const leases = await qnetJson<{ network: string; mac: string; ip: string; hostname?: string; static: boolean }[]>(api, ['leases']);
      const labLeases = leases.filter((l) => l.network === 'lab');
      assert.equal(labLeases.length, 3, JSON.stringify(leases));
      const byIp = new Map(labLeases.map((l) => [l.ip, l]));
      assert.equal(byIp.get(ips[0])?.hostname, 'vm1', JSON.stringify(labLeases));
      assert.equal(byIp.get(STATIC_IP)?.mac, vm3Mac);
      assert.equal(byIp.get(STATIC_IP)?.static, true);
      assert.equal(byIp.get(ips[0])?.static, false);
      assert.deepEqual(await qnetJson(api, ['leases', 'lab']).then((l: unknown[]) => l.length), 3);
    });

    test('qnet vm ls --json: three running VMs, connected, with their qnet NIC', async () => {
      const vms = await qnetJson<{ name: string; network: string; mac: string; state: string; connected: boolean; nics: { mac: string; qnet: boolean }[] }[]>(api, ['vm', 'ls']);
      assert.deepEqual(vms.map((v) => v.name).sort(), names, JSON.stringify(vms));
      macs = new Map(vms.map((v) => [v.name, v.mac]));
      assert.equal(macs.get('vm3'), vm3Mac);
      for (const v of vms) {
        assert.equal(v.network, 'lab');
        assert.equal(v.state, 'running', JSON.stringify(v));
        assert.equal(v.connected, true, JSON.stringify(v));
        assert.ok(v.nics.some((n) => n.qnet && n.mac === v.mac), JSON.stringify(v.nics));
      }
    });

    test('qnet net show lab / net ls: one port per VM, named, with its MAC and address', async () => {
      const net = await qnetJson<{ mode: string; gateway: string; ports: { vm?: string; macs: string[]; addresses: string[]; rxFrames: number; txFrames: number }[] }>(api, ['net', 'show', 'lab']);
      assert.equal(net.mode, 'nat');
      assert.equal(net.gateway, LAB_GW);
      for (const [i, vm] of names.entries()) {
        const p = net.ports.find((x) => x.vm === vm);
        assert.ok(p, `a port for ${vm}: ${JSON.stringify(net.ports)}`);
        assert.ok(p.macs.includes(macs.get(vm)!), JSON.stringify(p));
        assert.ok(p.addresses.includes(ips[i]), JSON.stringify(p));
        assert.ok(p.rxFrames > 0 && p.txFrames > 0, JSON.stringify(p));
      }
      const text = await qnet(api, ['net', 'show', 'lab']);
      assert.equal(text.code, 0, text.stderr);
      for (const vm of names) assert.match(text.stdout, new RegExp(`\\b${vm}\\b`));
      const ls = await qnet(api, ['net', 'ls']);
      assert.match(ls.stdout, /^lab\s+nat\s+10\.77\.0\.0\/24\s+10\.77\.0\.1\s+3\s+3\b/m, ls.stdout);
      assert.match(ls.stdout, /^quiet\s+isolated\s+10\.78\.0\.0\/24/m, ls.stdout);
    });

    test("qnet info network: QEMU's own view, per VM, with the qnet netdev and the MAC", async () => {
      const info = await qnet(api, ['info', 'network']);
      assert.equal(info.code, 0, info.stderr);
      assert.match(info.stdout, /^network lab:/m, info.stdout);
      for (const vm of names) {
        assert.match(info.stdout, new RegExp(`^  ${vm} \\(pid \\d+\\):`, 'm'), info.stdout);
        assert.ok(info.stdout.includes(macs.get(vm)!), `info network shows ${vm}'s MAC:\n${info.stdout}`);
      }
      assert.match(info.stdout, /qnet0/, info.stdout);
    });

    test('GET /metrics over the unix socket', async () => {
      const metrics = await httpGet({ socketPath: api, path: '/metrics' });
      assert.equal(metrics.status, 200);
      assert.match(metrics.body, /^qnet_leases\{network="lab"\} 3$/m, metrics.body);
      for (const vm of names) {
        const m = new RegExp(`^qnet_port_rx_frames_total\\{network="lab",port="\\d+",vm="${vm}"\\} (\\d+)$`, 'm').exec(metrics.body);
        assert.ok(m && Number(m[1]) > 0, `rx frames for ${vm}:\n${metrics.body}`);
      }
      const q = /^qnet_dns_queries_total\{network="lab"\} (\d+)$/m.exec(metrics.body);
      assert.ok(q && Number(q[1]) >= 3, metrics.body);
    });

    test("a runtime forward to vm2's httpd works from the host and is refused again after rm", async () => {
      const hostPort = await freeTcpPort();
      const add = await qnet(api, ['forward', 'add', 'lab', `tcp:${hostPort}`, 'vm2:80']);
      assert.equal(add.code, 0, add.stderr);
      assert.match(add.stdout, new RegExp(`^tcp:127\\.0\\.0\\.1:${hostPort}: tcp 127\\.0\\.0\\.1:${hostPort} -> vm2:80 on lab$`, 'm'));
      assert.equal(await fetchText(hostPort), page('vm2'));
      const fls = await qnetJson<{ id: string; guest: string; guestPort: number; source: string; connections: number }[]>(api, ['forward', 'ls', 'lab']);
      assert.deepEqual(fls.map((f) => [f.id, f.guest, f.guestPort, f.source]), [[`tcp:127.0.0.1:${hostPort}`, 'vm2', 80, 'runtime']]);
      const rm = await qnet(api, ['forward', 'rm', 'lab', `tcp:${hostPort}`]);
      assert.equal(rm.code, 0, rm.stderr);
      assert.match(rm.stdout, /removed tcp:127\.0\.0\.1:\d+ \(-> vm2:80\)/);
      assert.equal(await fetchText(hostPort), 'ERR ECONNREFUSED');
      assert.deepEqual(await qnetJson(api, ['forward', 'ls', 'lab']), []);
    });

    test("qnet capture lab --port vm2 records that VM's port only; qnet capture lab the whole network", async () => {
      const start = (file: string, port?: string) => {
        const c = spawn(process.execPath, [QNET, 'capture', 'lab', ...(port ? ['--port', port] : []), '-w', file, '--api', api], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
        const st = { c, err: '', exit: new Promise<number | null>((r) => c.on('close', r)) };
        c.stderr.on('data', (d: Buffer) => (st.err += d));
        return st;
      };
      const file = join(dir.path, 'vm2.pcap');
      const allFile = join(dir.path, 'lab.pcap');
      const one = start(file, 'vm2');
      const all = start(allFile);
      const hostPort = await freeTcpPort();
      let err = '';
      try {
        for (const x of [one, all]) await waitFor(() => /Ctrl-C stops/.test(x.err), { what: 'qnet capture to start', timeoutMs: 20_000, diag: () => x.err });
        // traffic to vm2 (through a forward) and, on the same network, to vm1
        assert.equal((await qnet(api, ['forward', 'add', 'lab', `tcp:${hostPort}`, 'vm2:80'])).code, 0);
        assert.equal(await fetchText(hostPort), page('vm2'));
        const v1 = await freeTcpPort();
        assert.equal((await qnet(api, ['forward', 'add', 'lab', `tcp:${v1}`, 'vm1:80'])).code, 0);
        assert.equal(await fetchText(v1), page('vm1'));
        await qnet(api, ['forward', 'rm', 'lab', `tcp:${v1}`]);
      } finally {
        await qnet(api, ['forward', 'rm', 'lab', `tcp:${hostPort}`]);
        one.c.kill('SIGINT');
        all.c.kill('SIGINT');
      }
      assert.equal(await one.exit, 0, one.err);
      assert.equal(await all.exit, 0, all.err);
      err = one.err;
      const n = /(\d+) frames captured on lab port vm2 to /.exec(err);
      assert.ok(n && Number(n[1]) > 0, err);
      const vm2 = macs.get('vm2')!;
      const rows = await tshark(file, ['-T', 'fields', '-e', 'eth.src', '-e', 'eth.dst', '-e', 'tcp.srcport', '-e', 'tcp.dstport']);
      assert.equal(rows.length, Number(n[1]), 'every frame the CLI counted is in the file');
      // every frame came from vm2 or went to it (unicast to vm2, or a broadcast/multicast it was sent)
      const foreign = rows.filter(([src, dst]) => src !== vm2 && dst !== vm2 && !/^(ff:ff:ff:ff:ff:ff|01:|33:33:)/.test(dst));
      assert.deepEqual(foreign, [], 'only vm2\'s frames');
      assert.ok(rows.some(([src, , sport]) => src === vm2 && sport === '80'), 'vm2\'s httpd answering');
      // (vm1's broadcasts, ARP for one, reach vm2's port too; its unicast to the host does not)
      assert.ok(!rows.some(([src, dst]) => src === macs.get('vm1') && !/^(ff:ff:ff:ff:ff:ff|01:|33:33:)/.test(dst)), 'nothing vm1 sent to the host');
      // the whole network: both httpds answering
      const allRows = await tshark(allFile, ['-T', 'fields', '-e', 'eth.src', '-e', 'tcp.srcport']);
      for (const vm of ['vm1', 'vm2']) assert.ok(allRows.some(([src, sport]) => src === macs.get(vm) && sport === '80'), `${vm}'s httpd in the capture of the whole network`);
      assert.match(all.err, /\d+ frames captured on lab to /);
    });

    test('guests power off; qnet run exits with QEMU\'s status and unregisters the VM', async () => {
      for (const g of lab) g.write('done\n');
      const codes = await Promise.all(lab.map((g) => g.exited));
      assert.deepEqual(codes, [0, 0, 0], lab.map((g) => g.diag()).join('\n'));
      for (const g of lab) { g.dump(); assert.match(g.output, /^QNET finished$/m); }
      assert.deepEqual(await qnetJson(api, ['vm', 'ls']), []);
      const afterOff = await qnetJson<{ ports: unknown[] }>(api, ['net', 'show', 'lab']);
      assert.equal(afterOff.ports.length, 0, JSON.stringify(afterOff.ports));
    });
  });

  describe('an isolated network: guests reach each other by name and nothing beyond the gateway', () => {
    const iso: RunGuest[] = [];
    let requestsBefore = 0;
    const peerOf = (i: number) => iso[1 - i].name;

    before(async () => {
      iso.push(await RunGuest.start(api, 'quiet', 'iso1', { script: quietScript('iso1', 'iso2', httpSrv.port, dns.port) }));
      iso.push(await RunGuest.start(api, 'quiet', 'iso2', { script: quietScript('iso2', 'iso1', httpSrv.port, dns.port) }));
      guests.push(...iso);
      await Promise.all(iso.map((g) => g.waitFor(/^QNET ready$/m, 180_000)));
      requestsBefore = httpSrv.requests.length;
      for (const g of iso) g.write('go\n');
      await Promise.all(iso.map((g) => g.waitFor(/^QNET checked$/m, 270_000)));
    });

    test('DHCP addresses in 10.78.0.0/24', () => {
      const ips = iso.map((g) => g.value('dhcp-ip'));
      for (const ip of ips) assert.match(ip ?? '', /^10\.78\.0\.\d+$/);
      assert.notEqual(ips[0], ips[1]);
    });

    test('the guests ping and fetch each other by name; the gateway answers pings', () => {
      for (const [i, g] of iso.entries()) {
        const r = g.results();
        const d = g.diag();
        assert.deepEqual(r.get(`ping-${peerOf(i)}`), ['0'], `${g.name} pings ${peerOf(i)}\n${d}`);
        assert.equal(r.get(`http-${peerOf(i)}`)?.join(' '), page(peerOf(i)), d);
        assert.equal(r.get(`httpfq-${peerOf(i)}`)?.join(' '), page(peerOf(i)), d);
        assert.deepEqual(r.get('ping-gw'), ['0'], `${g.name} pings the gateway\n${d}`);
      }
    });

    test('TCP and UDP to the host through the gateway are refused (RST, port unreachable), counted', async () => {
      for (const g of iso) {
        const r = g.results();
        const d = g.diag();
        const tcp = r.get('out-tcp') ?? [];
        assert.notEqual(tcp[0], '0', `TCP to the host through the gateway fails\n${d}`);
        // refused by an RST, not a hang that `timeout` ended
        assert.match(tcp.slice(1).join(' '), /Connection refused/, `and is refused: ${tcp.join(' ')}`);
        assert.notEqual(r.get('out-nc')?.[0] ?? '0', '0', d);
        assert.notEqual(r.get('udp-out')?.[0], '0', `no UDP to the host through the gateway\n${d}`);
      }
      const c = (await qnetJson<{ counters: { tcp: { refused: number }; gateway: { udpNoService: number }; tcpNat: unknown; udpNat: unknown } }>(api, ['net', 'show', 'quiet'])).counters;
      assert.equal(c.tcp.refused, 4, 'wget and nc from both guests got an RST');
      assert.ok(c.gateway.udpNoService >= 2, `the UDP queries got port unreachable: ${JSON.stringify(c.gateway)}`);
      assert.deepEqual([c.tcpNat, c.udpNat], [null, null], 'an isolated network has no NAT at all');
      assert.equal(httpSrv.requests.length, requestsBefore, 'the loopback HTTP server saw nothing from the isolated network');
    });

    test('outside names do not resolve, and nothing reaches the upstream', () => {
      for (const g of iso) {
        const r = g.results();
        assert.notEqual(r.get('dns-out')?.[0], '0', `outside names do not resolve\n${g.diag()}`);
        assert.equal(r.get('dns-out')?.[1], undefined, g.diag());
      }
      assert.ok(!dns.queries.includes(OUTSIDE_ISO), `the test DNS server saw nothing from the isolated network: ${dns.queries.join(' ')}`);
    });

    test('the guests finish; their leases carry their names', async () => {
      for (const g of iso) g.dump();
      const codes = await Promise.all(iso.map((g) => g.exited));
      assert.deepEqual(codes, [0, 0]);
      const leases = await qnetJson<{ network: string; hostname?: string }[]>(api, ['leases', 'quiet']);
      assert.deepEqual(leases.map((l) => l.hostname).sort(), ['iso1', 'iso2']);
    });
  });

  describe("the API socket is its owner's only; the TCP API wants the token", () => {
    test('runtime dir 0700, api.sock 0600; the owner gets in', async () => {
      assert.equal(statSync(runtimeDir).mode & 0o777, 0o700, 'runtime dir 0700');
      assert.equal(statSync(api).mode & 0o777, 0o600, 'api.sock 0600');
      assert.equal((await httpGet({ socketPath: api, path: '/v1/status' })).status, 200);
    });

    test('another user is refused (EACCES), also with the directory opened up', { skip: !isRoot && 'not root: cannot switch to nobody' }, async () => {
      // through the 0700 directory
      assert.equal(await asNobody(probeSocket(api)), 'EACCES');
      // the qnet client as nobody says so too (exit 3)
      const cli = await new Promise<{ rc: number | null; err: string }>((resolve) => {
        const c = spawn('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, join(repoRoot, 'bin', 'qnet.js'), 'status', '--api', api],
          { cwd: '/', env: { ...process.env, HOME: '/nonexistent' }, stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        c.stderr.on('data', (d: Buffer) => (err += d));
        c.on('close', (rc) => resolve({ rc, err }));
      });
      assert.equal(cli.rc, 3, cli.err);
      assert.match(cli.err, /permission denied/);
      // with the directory opened up, the socket's own mode still keeps nobody out
      chmodSync(runtimeDir, 0o711);
      try {
        assert.equal(await asNobody(probeSocket(api)), 'EACCES');
      } finally {
        chmodSync(runtimeDir, 0o700);
      }
    });

    test('TCP API: on because configured, loopback only, bearer token required; the CLI sends QNET_API_TOKEN', async () => {
      assert.deepEqual(await tcpListeners(daemon.pid), [`127.0.0.1:${apiPort}`], 'the daemon listens on TCP only for the API (no forwards are left)');
      const none = await httpGet({ port: apiPort, path: '/v1/status' });
      assert.equal(none.status, 401);
      assert.match(none.body, /bearer token/);
      const wrong = await httpGet({ port: apiPort, path: '/v1/status', headers: { Authorization: `Bearer ${API_TOKEN.replace(/.$/, (c) => (c === '0' ? '1' : '0'))}` } });
      assert.equal(wrong.status, 401);
      const metricsNoToken = await httpGet({ port: apiPort, path: '/metrics' });
      assert.equal(metricsNoToken.status, 401);
      const ok = await httpGet({ port: apiPort, path: '/v1/status', headers: { Authorization: `Bearer ${API_TOKEN}` } });
      assert.equal(ok.status, 200);
      assert.equal(JSON.parse(ok.body).pid, daemon.pid);
      const st = await qnet(`http://127.0.0.1:${apiPort}`, ['status', '--json'], { env: { QNET_API_TOKEN: API_TOKEN } });
      assert.equal(st.code, 0, st.stderr);
      assert.equal(JSON.parse(st.stdout).pid, daemon.pid);
      const st2 = await qnet(`http://127.0.0.1:${apiPort}`, ['status'], { env: { QNET_API_TOKEN: '' } });
      assert.notEqual(st2.code, 0);
    });
  });
});
