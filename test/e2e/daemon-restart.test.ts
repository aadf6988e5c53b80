// End-to-end: the daemon restarts under a running `qnet run` guest.
//
// A guest on a nat network (started with `qnet run`, so QEMU is the stream server) pings the
// gateway 5 times a second; the test timestamps each reply line as it arrives on the console.
// The daemon is stopped with SIGTERM (the replies stop: the guest really lost its network) and
// started again with the same config and state directory. Checked:
//   - the new daemon connects to the VM again: its port (with the VM name) is back in
//     `GET /v1/networks/lab` and the guest's pings are answered again, both within 2 s of the
//     new daemon's API being up;
//   - the guest keeps its address: `qnet leases` of the new daemon lists it before the guest
//     asks, a DHCP renew (udhcpc SIGUSR1) is answered with the same address, and the lease's
//     expiry moves forward; `qnet vm ls` shows the VM connected; NAT to a loopback HTTP server
//     works again.
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
import { sleep, startDns, startHttp, type TestDns } from '../helpers/user-net.ts';

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

describe('daemon restart under a running qnet run guest', { timeout: 150_000 }, () => {
  const dir = makeTempDir('e2e-restart-');
  const runtimeDir = join(dir.path, 'run');
  const stateDir = join(dir.path, 'state');
  const cfgFile = join(dir.path, 'qnet.yaml');
  const api = join(runtimeDir, 'api.sock');
  let dns: TestDns;
  let httpSrv: Awaited<ReturnType<typeof startHttp>>;
  const daemons: Daemon[] = [];
  let guest: RunGuest | undefined;

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
  });

  after(async () => {
    await guest?.stop('SIGKILL');
    for (const d of daemons) await d.stop();
    dns?.close();
    httpSrv?.close();
    dir.remove();
  });

  test('the guest is connected again within 2 s and keeps its address', async () => {
    const d1 = await Daemon.start({ config: cfgFile, runtimeDir, stateDir, api });
    daemons.push(d1);
    guest = await RunGuest.start(api, 'lab', 'rvm', { script: script(httpSrv.port) });
    const g = guest;
    await g.waitFor(/^QNET ready$/m, 60_000);
    const ip = g.value('dhcp-ip') ?? '';
    assert.match(ip, /^10\.79\.0\.\d+$/, g.diag());
    assert.equal(g.value('nat1'), HTTP_BODY, g.diag());
    const mac = (await qnetJson<{ name: string; mac: string }[]>(api, ['vm', 'ls']))[0]?.mac;
    assert.ok(mac, 'qnet vm ls lists rvm');
    const lease1 = (await qnetJson<Lease[]>(api, ['leases'])).find((l) => l.mac === mac);
    assert.equal(lease1?.ip, ip);
    assert.equal(lease1?.hostname, 'rvm');

    // a few answered pings, then stop the daemon
    const replies = () => g.lines.filter((l) => REPLY.test(l.line));
    const until = async (cond: () => boolean, ms: number, what: string) => {
      const end = Date.now() + ms;
      while (!cond()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${g.diag()}`);
        if (!g.running) throw new Error(`qnet run exited waiting for ${what}\n${g.diag()}`);
        await sleep(10);
      }
    };
    await until(() => replies().length >= 3, 15_000, '3 ping replies');
    const tStop = Date.now();
    assert.equal(await d1.stop('SIGTERM'), 0, `daemon 1 exits 0 on SIGTERM\n${d1.stderr}`);
    const tStopped = Date.now();
    const lastBefore = replies().filter((l) => l.t <= tStopped).at(-1)!;
    assert.ok(g.running, 'the guest survives the daemon');

    // the guest is cut off: no replies while no daemon runs
    await sleep(1000);
    const during = replies().filter((l) => l.t > tStopped + 300);
    assert.deepEqual(during, [], 'no ping replies without a daemon');

    const tStart = Date.now();
    const d2 = await Daemon.start({ config: cfgFile, runtimeDir, stateDir, api });
    daemons.push(d2);
    // the VM's port is back in the network (polled straight over the API socket)
    let tPort = 0;
    for (const end = Date.now() + 10_000; Date.now() < end; await sleep(20)) {
      const n = await getJson<{ ports: { vm?: string; macs: string[] }[] }>(api, '/v1/networks/lab');
      if (n.ports.some((p) => p.vm === 'rvm')) { tPort = Date.now(); break; }
    }
    assert.ok(tPort, `rvm's port came back\n${d2.stderr}`);
    await until(() => replies().some((l) => l.t > tStopped), 10_000, 'a ping reply after the restart');
    const firstAfter = replies().find((l) => l.t > tStopped)!;
    const portGap = Math.max(0, tPort - d2.readyAt);
    const pingGap = Math.max(0, firstAfter.t - d2.readyAt);
    const outage = firstAfter.t - lastBefore.t;
    console.log(`# restart: daemon stop took ${tStopped - tStop} ms, new daemon up ${d2.readyAt - tStart} ms after spawn; ` +
      `after it was up: port back in ${portGap} ms, first ping reply in ${pingGap} ms (seq ${REPLY.exec(lastBefore.line)![1]} -> ${REPLY.exec(firstAfter.line)![1]}); ` +
      `whole outage ${outage} ms`);
    assert.ok(portGap < 2000, `port back ${portGap} ms after the new daemon was up`);
    assert.ok(pingGap < 2000, `pings answered again ${pingGap} ms after the new daemon was up`);
    assert.match(d2.stderr, /guest port attached .*on=rvm/);

    // `qnet net show` and `qnet vm ls` agree
    const net = await qnetJson<{ ports: { vm?: string; macs: string[]; addresses: string[] }[] }>(api, ['net', 'show', 'lab']);
    const port = net.ports.find((p) => p.vm === 'rvm');
    assert.ok(port?.macs.includes(mac), JSON.stringify(net.ports));
    assert.ok(port?.addresses.includes(ip), JSON.stringify(net.ports));
    const vms = await qnetJson<{ name: string; connected: boolean; state: string }[]>(api, ['vm', 'ls']);
    assert.deepEqual(vms.map((v) => [v.name, v.connected, v.state]), [['rvm', true, 'running']]);

    // the lease was restored before the guest asked; the renew gets the same address
    const lease2 = (await qnetJson<Lease[]>(api, ['leases'])).find((l) => l.mac === mac);
    assert.equal(lease2?.ip, ip, 'qnet leases of the new daemon lists the old lease');
    assert.equal(lease2?.hostname, 'rvm');
    const from = g.output.length;
    await sleep(1100); // so a renewed lease expires visibly later (expiresAt has ms, lease time is whole seconds)
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

    // NAT works through the new daemon
    g.write('nat\n');
    await g.waitFor(/^QNET nat2 /m, 20_000);
    assert.equal(g.value('nat2'), HTTP_BODY, g.diag());
    assert.deepEqual(httpSrv.requests, ['/before', '/after']);

    g.write('done\n');
    assert.equal(await g.exited, 0, g.diag());
    assert.match(g.output, /^QNET finished$/m);
    g.dump();
    assert.deepEqual(await qnetJson(api, ['vm', 'ls']), [], 'qnet run unregistered the VM with the new daemon');
    assert.equal(await d2.stop('SIGTERM'), 0);
  });
});
