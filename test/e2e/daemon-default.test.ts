// End-to-end: `qnet up` with no config at all, as the README's quick start runs it.
//
// The daemon gets no -c and no QNET_CONFIG; XDG_RUNTIME_DIR and XDG_STATE_HOME point into a
// temp dir (as root the state directory is /var/lib/qnet whatever XDG_STATE_HOME says, so then
// --state-dir is given too, to leave the real one alone). The clients find the daemon through
// XDG_RUNTIME_DIR alone (no --api). Two guests on the embedded `default` network: one started
// with `qnet run default --name dvm -- qemu-system-x86_64 ...`, one attached by hand with the
// arguments `qnet attach default --name hvm` prints. Both get a DHCP address in
// 192.168.122.0/24, ping the gateway and fetch a page from a loopback HTTP server through NAT
// at 192.168.122.1; they ping each other by name. The daemon has no TCP listener (the TCP API
// is off by default).
//
// Safety: the embedded default's DNS upstreams come from /etc/resolv.conf, so the guests here
// resolve no names but each other's (answered locally) and use addresses otherwise.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/cleanup.ts';
import { bootGuest, type Guest } from '../helpers/guest.ts';
import { Daemon, RunGuest, qnetJson, tcpListeners } from '../helpers/qnetd.ts';
import { startHttp } from '../helpers/user-net.ts';

const TOKEN = randomBytes(4).toString('hex');
const HTTP_BODY = `default-page-${TOKEN}`;
const GW = '192.168.122.1';
const isRoot = process.getuid?.() === 0;

function script(vm: string, peer: string, httpPort: number): string {
  return `
oneline() { tr '\\n' ' ' | tr -s ' '; }
udhcpc -i eth0 -n -q -t 5 -T 2 -x hostname:${vm}
echo QNET dhcp-rc $?
echo QNET ready
read go
ping -c 2 -W 5 ${GW} >/dev/null 2>&1; echo QNET ping-gw $?
echo QNET nat $(timeout 10 wget -q -O - http://${GW}:${httpPort}/${vm} 2>&1 | oneline)
ping -c 2 -W 5 ${peer} >/dev/null 2>&1; echo QNET ping-peer $?
echo QNET checked
`;
}

describe('qnet up with the embedded default config', { timeout: 600_000 }, () => {
  const dir = makeTempDir('e2e-default-');
  const xdgRuntime = join(dir.path, 'xdg-run');
  const xdgState = join(dir.path, 'xdg-state');
  const env = { XDG_RUNTIME_DIR: xdgRuntime, XDG_STATE_HOME: xdgState, QNET_API: '' };
  const runtimeDir = join(xdgRuntime, 'qnet');
  const stateDir = join(xdgState, 'qnet');
  let httpSrv: Awaited<ReturnType<typeof startHttp>>;
  let daemon: Daemon;
  let run: RunGuest | undefined;
  let hand: Guest | undefined;

  before(async () => {
    mkdirSync(xdgRuntime, { mode: 0o700 });
    httpSrv = await startHttp(HTTP_BODY);
    daemon = await Daemon.start({ env, stateDir: isRoot ? stateDir : undefined, api: join(runtimeDir, 'api.sock') });
  });

  after(async () => {
    await run?.stop('SIGKILL');
    await hand?.kill();
    await daemon?.stop();
    httpSrv?.close();
    dir.remove();
  });

  test('the daemon runs network default (nat, 192.168.122.0/24) with its sockets in XDG_RUNTIME_DIR/qnet', () => {
    assert.match(daemon.stdout, /network default \(nat\) 192\.168\.122\.0\/24 gateway 192\.168\.122\.1/, daemon.stdout);
    assert.ok(daemon.stdout.includes(join(runtimeDir, 'api.sock')), daemon.stdout);
    assert.ok(existsSync(join(runtimeDir, 'default.sock')), 'the default attach point is in the runtime dir');
    assert.equal(statSync(runtimeDir).mode & 0o777, 0o700);
  });

  test('clients find it through XDG_RUNTIME_DIR alone', async () => {
    const st = await qnetJson<{ configPath: string | null; runtimeDir: string; stateDir: string; networks: { name: string; mode: string; subnet: string }[] }>(undefined, ['status'], env);
    assert.equal(st.configPath, null);
    assert.equal(st.runtimeDir, runtimeDir);
    assert.equal(st.stateDir, stateDir);
    assert.deepEqual(st.networks.map((n) => [n.name, n.mode, n.subnet]), [['default', 'nat', '192.168.122.0/24']]);
  });

  test('the TCP API is off unless configured: the daemon listens on no TCP port at all', async () => {
    assert.deepEqual(await tcpListeners(daemon.pid), []);
  });

  describe('two guests: one through qnet run, one attached by hand', () => {
    const results: { name: string; r: Map<string, string[]>; d: string }[] = [];
    const ips: string[] = [];

    before(async () => {
      run = await RunGuest.start(undefined, 'default', 'dvm', { script: script('dvm', 'hvm', httpSrv.port) }, { env });
      const a = await qnetJson<{ mac: string; args: string[] }>(undefined, ['attach', 'default', '--name', 'hvm'], env);
      assert.match(a.args.join(' '), new RegExp(`^-netdev stream,id=qnet0,server=off,addr\\.type=unix,addr\\.path=${join(runtimeDir, 'default.sock').replace(/[.]/g, '\\.')} -device virtio-net-pci,netdev=qnet0,mac=${a.mac}$`));
      hand = await bootGuest({ name: 'hvm', netArgs: a.args, script: script('hvm', 'dvm', httpSrv.port), timeoutMs: 600_000 });
      await Promise.all([run.waitFor(/^QNET ready$/m, 180_000), hand.waitFor(/^QNET ready$/m, 180_000)]);
      run.write('go\n');
      hand.write('go\n');
      await Promise.all([run.waitFor(/^QNET checked$/m, 180_000), hand.waitFor(/^QNET checked$/m, 180_000)]);
      results.push({ name: 'dvm', r: run.results(), d: run.diag() }, { name: 'hvm', r: hand.results(), d: hand.output });
      ips.push(...results.map((x) => x.r.get('dhcp-ip')?.[0] ?? ''));
    });

    test('both get a DHCP address in 192.168.122.0/24 with the gateway as router and domain qnet', () => {
      for (const [i, { name, r, d }] of results.entries()) {
        assert.deepEqual(r.get('dhcp-rc'), ['0'], d);
        const m = /^192\.168\.122\.(\d+)$/.exec(ips[i]);
        assert.ok(m && +m[1] >= 2 && +m[1] <= 254, `${name}: ${ips[i]} in 192.168.122.2-254\n${d}`);
        assert.deepEqual(r.get('dhcp-router'), [GW]);
        assert.deepEqual(r.get('dhcp-domain'), ['qnet']);
      }
      assert.notEqual(ips[0], ips[1]);
    });

    test('both ping the gateway and reach a loopback HTTP server through NAT', () => {
      for (const { name, r, d } of results) {
        assert.deepEqual(r.get('ping-gw'), ['0'], `${name} pings the gateway\n${d}`);
        assert.equal(r.get('nat')?.join(' '), HTTP_BODY, `${name} reaches the loopback HTTP server\n${d}`);
      }
      assert.deepEqual(httpSrv.requests.slice().sort(), ['/dvm', '/hvm']);
    });

    test('they ping each other by name, answered by the daemon itself (nothing goes to the host resolvers)', async () => {
      for (const { name, r, d } of results) assert.deepEqual(r.get('ping-peer'), ['0'], `${name} pings the other guest by name\n${d}`);
      const l = await qnetJson<{ network: string; ip: string; hostname?: string }[]>(undefined, ['leases'], env);
      assert.deepEqual(l.map((x) => [x.network, x.hostname, x.ip]).sort(), [['default', 'dvm', ips[0]], ['default', 'hvm', ips[1]]].sort());
      const dns = (await qnetJson<{ counters: { dns: { queries: number; local: number; forwarded: number } } }>(undefined, ['net', 'show', 'default'], env)).counters.dns;
      assert.ok(dns.queries >= 2 && dns.local >= 2, JSON.stringify(dns));
      assert.equal(dns.forwarded, 0, JSON.stringify(dns));
    });

    test('the guests power off; after SIGTERM the state is in XDG_STATE_HOME/qnet', async () => {
      assert.equal(await run!.exited, 0, run!.diag());
      assert.equal(await hand!.waitForExit(30_000), 0);
      run!.dump();
      assert.equal(await daemon.stop('SIGTERM'), 0);
      const state = JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as { networks: Record<string, { macs: Record<string, string>; leases: unknown[] }> };
      assert.deepEqual(Object.keys(state.networks.default.macs).sort(), ['dvm', 'hvm']);
      assert.equal(state.networks.default.leases.length, 2);
    });
  });
});
