// End-to-end: the daemon restarts under a running `qnet run` guest.
//
// A guest on a nat network (started with `qnet run`, so QEMU is the stream server) pings the
// gateway 5 times a second; the test collects the reply lines (with their sequence numbers)
// from the console. The daemon is stopped with SIGTERM and started again with the same config
// and state directory. Checked, one test each, in order:
//   - the guest survives the daemon and really loses its network (pings go unanswered: a gap
//     in the reply sequence numbers);
//   - the new daemon connects to the VM again (an event: its port, with the VM name, is back
//     in `GET /v1/networks/lab`, the daemon logs the attach) and the pings are answered again;
//   - `qnet net show` and `qnet vm ls` agree;
//   - the guest keeps its address: `qnet leases` of the new daemon lists it before the guest
//     asks, a DHCP renew (udhcpc SIGUSR1) is answered with the same address, and the lease's
//     expiry moves forward;
//   - NAT to a loopback HTTP server works again; the guest powers off and is unregistered.
//
// Safety: every service is on 127.0.0.1; the DNS upstream is the test's own server.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/cleanup.ts';
import { Daemon, RunGuest, qnet, qnetJson } from '../helpers/qnetd.ts';
import { startDns, startHttp, type TestDns } from '../helpers/user-net.ts';
import { waitFor } from '../helpers/wait.ts';

const TOKEN = randomBytes(4).toString('hex');
const HTTP_BODY = `restart-page-${TOKEN}`;
const GW = '10.79.0.1';
const REPLY = new RegExp(`^64 bytes from ${GW.replace(/\./g, '\\.')}: seq=(\\d+)`);

function script(httpPort: number): string {
  return `
oneline() { tr '\\n' ' ' | tr -s ' '; }
udhcpc -f -i eth0 -t 5 -T 2 -x hostname:rvm -p /tmp/udhcpc.pid &
for i in $(seq 100); do ip -4 addr show eth0 | grep -q 'inet ' && break; sleep 0.2; done
echo QNET nat1 $(timeout 10 wget -q -O - http://${GW}:${httpPort}/before 2>&1 | oneline)
echo QNET ready
ping -i 0.2 ${GW} &
pingpid=$!
read renew
kill -USR1 $(cat /tmp/udhcpc.pid)
read nat
echo QNET nat2 $(timeout 10 wget -q -O - http://${GW}:${httpPort}/after 2>&1 | oneline)
read done
kill $pingpid
echo QNET finished
`;
}

function getJson<T>(socketPath: string, path: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => { try { resolve(JSON.parse(body) as T); } catch (e) { reject(e as Error); } });
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

interface Lease { network: string; mac: string; ip: string; hostname?: string; expiresAt: number }

describe('daemon restart under a running qnet run guest', { timeout: 600_000 }, () => {
  const dir = makeTempDir('e2e-restart-');
  const runtimeDir = join(dir.path, 'run');
  const stateDir = join(dir.path, 'state');
  const cfgFile = join(dir.path, 'qnet.yaml');
  const api = join(runtimeDir, 'api.sock');
  let dns: TestDns;
  let httpSrv: Awaited<ReturnType<typeof startHttp>>;
  const daemons: Daemon[] = [];
  let g: RunGuest;
  let d1: Daemon;
  let d2: Daemon;
  let ip = '';
  let mac = '';
  let tStop = 0;
  const replies = () => g.lines.filter((l) => REPLY.test(l.line)).map((l) => ({ t: l.t, seq: Number(REPLY.exec(l.line)![1]) }));
  const untilGuest = (cond: () => boolean, what: string) => waitFor(cond, { what, timeoutMs: 20_000, diag: () => g.diag(), abort: () => !g.running && 'qnet run exited' });

  before(async () => {
    dns = await startDns({});
    httpSrv = await startHttp(HTTP_BODY);
    writeFileSync(cfgFile, `networks:
  - name: lab
    mode: nat
    subnet: 10.79.0.0/24
    gateway: ${GW}
    dhcp: 10.79.0.50-10.79.0.99
    domain: lab.test
    upstreams: [127.0.0.1:${dns.port}]
`);
    d1 = await Daemon.start({ config: cfgFile, runtimeDir, stateDir, api });
    daemons.push(d1);
    g = await RunGuest.start(api, 'lab', 'rvm', { script: script(httpSrv.port) });
    await g.waitFor(/^QNET ready$/m, 180_000);
  });

  after(async () => {
    await g?.stop('SIGKILL');
    for (const d of daemons) await d.stop();
    dns?.close();
    httpSrv?.close();
    dir.remove();
  });

  test('before the restart: an address, NAT, a lease with the VM name, pings answered', async () => {
    ip = g.value('dhcp-ip') ?? '';
    assert.match(ip, /^10\.79\.0\.\d+$/, g.diag());
    assert.equal(g.value('nat1'), HTTP_BODY, g.diag());
    mac = (await qnetJson<{ name: string; mac: string }[]>(api, ['vm', 'ls']))[0]?.mac ?? '';
    assert.ok(mac, 'qnet vm ls lists rvm');
    const lease1 = (await qnetJson<Lease[]>(api, ['leases'])).find((l) => l.mac === mac);
    assert.equal(lease1?.ip, ip);
    assert.equal(lease1?.hostname, 'rvm');
    await untilGuest(() => replies().length >= 3, '3 ping replies');
  });

  test('the daemon stops with SIGTERM; the guest survives it', async () => {
    tStop = Date.now();
    assert.equal(await d1.stop('SIGTERM'), 0, `daemon 1 exits 0 on SIGTERM\n${d1.stderr}`);
    assert.ok(g.running, 'the guest survives the daemon');
  });

  test('a new daemon on the same state reconnects the VM: its port is back, pings are answered again', async () => {
    d2 = await Daemon.start({ config: cfgFile, runtimeDir, stateDir, api });
    daemons.push(d2);
    // the VM's port is back in the network (polled straight over the API socket)
    await waitFor(async () => (await getJson<{ ports: { vm?: string }[] }>(api, '/v1/networks/lab')).ports.some((p) => p.vm === 'rvm'),
      { what: "rvm's port to come back", timeoutMs: 20_000, diag: () => d2.stderr });
    assert.match(d2.stderr, /guest port attached .*on=rvm/);
    await untilGuest(() => replies().some((r) => r.t > d2.readyAt), 'a ping reply after the restart');
  });

  test('while no daemon ran, the guest was cut off: its pings went unanswered', () => {
    // ping sends every 0.2 s; the restart takes seconds: sequence numbers are missing there
    const seqs = replies().map((r) => r.seq);
    const lastBefore = Math.max(...replies().filter((r) => r.t <= tStop).map((r) => r.seq));
    const firstAfter = Math.min(...seqs.filter((q) => q > lastBefore));
    const answeredInGap = seqs.filter((q) => q > lastBefore + 1 && q < firstAfter);
    assert.deepEqual(answeredInGap, []);
    assert.ok(firstAfter - lastBefore >= 3, `pings ${lastBefore + 1}..${firstAfter - 1} unanswered (${firstAfter - lastBefore - 1}); replies ${seqs.join(',')}`);
  });

  test('qnet net show and qnet vm ls agree on the reconnected VM', async () => {
    const net = await qnetJson<{ ports: { vm?: string; macs: string[]; addresses: string[] }[] }>(api, ['net', 'show', 'lab']);
    const port = net.ports.find((p) => p.vm === 'rvm');
    assert.ok(port?.macs.includes(mac), JSON.stringify(net.ports));
    assert.ok(port?.addresses.includes(ip), JSON.stringify(net.ports));
    const vms = await qnetJson<{ name: string; connected: boolean; state: string }[]>(api, ['vm', 'ls']);
    assert.deepEqual(vms.map((v) => [v.name, v.connected, v.state]), [['rvm', true, 'running']]);
  });

  test('the guest keeps its address: the lease was restored, a renew gets the same address and a later expiry', async () => {
    const lease2 = (await qnetJson<Lease[]>(api, ['leases'])).find((l) => l.mac === mac);
    assert.equal(lease2?.ip, ip, 'qnet leases of the new daemon lists the old lease');
    assert.equal(lease2?.hostname, 'rvm');
    // (the renew comes seconds after the lease was granted, so its expiry is later)
    const from = g.output.length;
    g.write('renew\n');
    await g.waitFor(/^QNET dhcp-done (renew|bound)$/m, 20_000, from);
    const renewed = g.output.slice(from);
    assert.match(renewed, new RegExp(`^QNET dhcp-ip ${ip.replace(/\./g, '\\.')}$`, 'm'), `renewed with the same address\n${g.diag()}`);
    assert.doesNotMatch(renewed, /dhcp-event (nak|deconfig)/, g.diag());
    const lease3 = (await qnetJson<Lease[]>(api, ['leases'])).find((l) => l.mac === mac);
    assert.equal(lease3?.ip, ip);
    assert.ok(lease3!.expiresAt > lease2!.expiresAt, `the renew extended the lease (${lease2!.expiresAt} -> ${lease3!.expiresAt})`);
    const text = await qnet(api, ['leases']);
    assert.match(text.stdout, new RegExp(`^lab\\s+${ip.replace(/\./g, '\\.')}\\s+${mac}\\s+rvm\\s+dynamic`, 'm'), text.stdout);
  });

  test('NAT works through the new daemon', async () => {
    g.write('nat\n');
    await g.waitFor(/^QNET nat2 /m, 60_000);
    assert.equal(g.value('nat2'), HTTP_BODY, g.diag());
    assert.deepEqual(httpSrv.requests, ['/before', '/after']);
  });

  test('the guest powers off; qnet run unregisters it with the new daemon', async () => {
    g.write('done\n');
    assert.equal(await g.exited, 0, g.diag());
    assert.match(g.output, /^QNET finished$/m);
    g.dump();
    assert.deepEqual(await qnetJson(api, ['vm', 'ls']), [], 'qnet run unregistered the VM with the new daemon');
    assert.equal(await d2.stop('SIGTERM'), 0);
  });
});
