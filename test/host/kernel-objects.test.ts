// The host modules against a real kernel, each pointed at a network namespace this test makes
// (netnsRunner): nothing here touches the namespace the test runs in.
//
//   bridge   create (alias, MAC, MTU, STP, address, up), inspect, reconcile, delete
//   nft      a nat table with forwards: applying twice leaves one copy (the second apply is a
//            replace), removing leaves `nft list ruleset` exactly as before; modes without rules
//   sysctl   ip_forward changed and put back (and left alone if changed by someone else)
//   uplink   a NIC with an address, a default route and a static route moves to a bridge and
//            back; a LAN namespace on the other end of the veth answers pings all along
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createBridge, deleteBridge, inspectBridge, reconcileBridge, bridgeMac } from '../../src/host/bridge.ts';
import { applyRuleset, buildTable, inspectRuleset, removeRuleset, type RulesetSpec } from '../../src/host/nft.ts';
import { ensureSysctl, getSysctl, restoreSysctl, setSysctl } from '../../src/host/sysctl.ts';
import { moveBack, moveToBridge, readUplink } from '../../src/host/uplink.ts';
import { addrs, link, routes } from '../../src/host/ip.ts';
import { netnsRunner, type Runner } from '../../src/host/run.ts';
import { createNetns, veth, type Netns } from '../helpers/netns.ts';

const root = process.getuid?.() === 0;
const skip = root ? false : 'needs root (network namespaces)';

describe('kernel objects in a namespace', { skip }, () => {
  let ns: Netns;
  let lan: Netns;
  let r: Runner;
  before(async () => {
    ns = await createNetns();
    lan = await createNetns();
    r = netnsRunner(ns.name);
  });
  after(async () => {
    await ns?.delete();
    await lan?.delete();
  });

  test('bridge: create, inspect, reconcile, delete', async () => {
    await createBridge(r, { name: 'qnbr1', network: 'lab', mtu: 1400, stp: true, addr: { ip: '10.61.0.1', prefix: 24 } });
    const st = await inspectBridge(r, 'qnbr1');
    assert.deepEqual(
      { exists: st.exists, isBridge: st.isBridge, owner: st.owner, mtu: st.mtu, stp: st.stp, mac: st.mac, up: st.up, ports: st.ports },
      { exists: true, isBridge: true, owner: 'lab', mtu: 1400, stp: true, mac: bridgeMac('lab'), up: true, ports: [] },
    );
    assert.deepEqual(st.addrs.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.61.0.1/24']);
    assert.deepEqual(await reconcileBridge(r, { name: 'qnbr1', network: 'lab', mtu: 1400, stp: true, addr: { ip: '10.61.0.1', prefix: 24 } }, st), [], 'nothing to change');
    const did = await reconcileBridge(r, { name: 'qnbr1', network: 'lab', mtu: 1500, stp: false, addr: { ip: '10.61.0.1', prefix: 24 } }, st);
    assert.deepEqual(did, ['mtu 1500', 'stp off']);
    const st2 = await inspectBridge(r, 'qnbr1');
    assert.deepEqual([st2.mtu, st2.stp], [1500, false]);
    await deleteBridge(r, 'qnbr1');
    assert.equal((await inspectBridge(r, 'qnbr1')).exists, false);
    await deleteBridge(r, 'qnbr1'); // already gone: no error
    await assert.rejects(createBridge(r, { name: 'a-name-too-long-for-linux', network: 'lab' }), /not a valid interface name/);
  });

  test('nft: a replace leaves one copy, removal restores the ruleset exactly', async () => {
    await ns.run(['nft', 'add', 'table', 'inet', 'someone_else']);
    await ns.run(['nft', 'add', 'chain', 'inet', 'someone_else', 'my_forward', '{ type filter hook forward priority 10; policy accept; }']);
    const before = await ns.run(['nft', 'list', 'ruleset']);
    await createBridge(r, { name: 'qnbr2', network: 'lab', addr: { ip: '10.62.0.1', prefix: 24 } });
    const spec: RulesetSpec = {
      network: 'lab', bridge: 'qnbr2', subnet: '10.62.0.0/24', mode: 'nat',
      forwards: [{ proto: 'tcp', hostAddr: '', hostPort: 8080, guestIp: '10.62.0.50', guestPort: 80 }],
    };
    await applyRuleset(r, spec);
    const once = await ns.run(['nft', '-s', 'list', 'table', 'ip', 'qnet-lab']);
    const info = await inspectRuleset(r, 'lab');
    assert.equal(info.exists, true);
    assert.deepEqual(info.chains, ['forward', 'guest_cross', 'guest_input', 'guest_output', 'guest_nat', 'prerouting', 'output']);
    assert.equal(info.rules, 3 + 1 + 3 + 2 + 6 + 1 + 1);
    await applyRuleset(r, spec);
    assert.equal(await ns.run(['nft', '-s', 'list', 'table', 'ip', 'qnet-lab']), once, 'a second apply replaces, it does not add');
    assert.equal((await inspectRuleset(r, 'lab')).rules, info.rules);
    // a changed spec replaces the table atomically
    await applyRuleset(r, { ...spec, forwards: [] });
    assert.equal((await inspectRuleset(r, 'lab')).rules, 3 + 1 + 2 + 2 + 5);
    assert.equal(await removeRuleset(r, 'lab'), true);
    assert.equal(await removeRuleset(r, 'lab'), false, 'removing twice is not an error');
    assert.equal(await ns.run(['nft', 'list', 'ruleset']), before, 'the ruleset is exactly as before');
    // isolated and routed differ only in the filter chains; open and bridge have no table
    assert.match(buildTable({ ...spec, mode: 'isolated' })!, /guest_output \{\n\t\tiifname "qnbr2" counter reject\n\t\}/);
    assert.doesNotMatch(buildTable({ ...spec, mode: 'isolated' })!, /masquerade|dnat/);
    assert.match(buildTable({ ...spec, mode: 'routed' })!, /oifname "qnbr2" ip daddr 10\.62\.0\.0\/24 counter accept/);
    assert.doesNotMatch(buildTable({ ...spec, mode: 'routed' })!, /masquerade|dnat/);
    assert.equal(buildTable({ ...spec, mode: 'open' }), null);
    assert.equal(buildTable({ ...spec, mode: 'bridge' }), null);
    await applyRuleset(r, { ...spec, mode: 'open' });
    assert.equal(await ns.run(['nft', 'list', 'ruleset']), before, 'open mode leaves no table');
    await deleteBridge(r, 'qnbr2');
    await ns.run(['nft', 'delete', 'table', 'inet', 'someone_else']);
  });

  test('sysctl: changed, restored, and left alone when someone else changed it', async () => {
    assert.equal(await getSysctl(r, 'net.ipv4.ip_forward'), '0');
    const c = await ensureSysctl(r, 'net.ipv4.ip_forward', '1');
    assert.deepEqual(c, { key: 'net.ipv4.ip_forward', before: '0', after: '1' });
    assert.equal(await ensureSysctl(r, 'net.ipv4.ip_forward', '1'), null, 'already set: no change recorded');
    assert.equal(await restoreSysctl(r, c!), true);
    assert.equal(await getSysctl(r, 'net.ipv4.ip_forward'), '0');
    const c2 = await ensureSysctl(r, 'net.ipv4.ip_forward', '1');
    await setSysctl(r, 'net.ipv4.ip_forward', '0');
    await setSysctl(r, 'net.ipv4.ip_forward', '1');
    assert.equal(await restoreSysctl(r, { ...c2!, after: '2' }), false, 'a value qnet did not set is left');
    await setSysctl(r, 'net.ipv4.ip_forward', '0');
  });

  test('uplink: addresses and routes move to the bridge and back; the LAN stays reachable', async () => {
    const v = await veth(ns, lan, { nameA: 'lan0', nameB: 'up0', addrA: '198.51.100.2/24', addrB: '198.51.100.1/24' });
    await lan.addAddr(v.b, '203.0.113.1/24');
    await ns.addRoute('default', { via: '198.51.100.1' });
    await ns.addRoute('192.0.2.0/24', { via: '198.51.100.1' });
    await ns.run(['busybox', 'ping', '-c1', '-W2', '203.0.113.1']);
    const mac = (await link(r, 'lan0'))!.address!;
    const rec = await readUplink(r, 'lan0', 'qnbr3');
    assert.deepEqual(rec.addrs.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['198.51.100.2/24']);
    assert.deepEqual(rec.routes4.map((x) => `${x.dst} via ${x.gateway}`).sort(), ['192.0.2.0/24 via 198.51.100.1', 'default via 198.51.100.1']);
    await createBridge(r, { name: 'qnbr3', network: 'lan', mac, mtu: rec.mtu });
    const pinger = ns.spawn(['busybox', 'ping', '-i', '0.2', '198.51.100.1']);
    let replies = 0;
    pinger.stdout!.on('data', (d: Buffer) => { replies += (d.toString().match(/bytes from/g) ?? []).length; });
    await moveToBridge(r, rec);
    assert.equal((await link(r, 'lan0'))!.master, 'qnbr3');
    assert.deepEqual((await addrs(r, 'lan0')).filter((a) => a.family === 'inet'), []);
    assert.deepEqual((await addrs(r, 'qnbr3')).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['198.51.100.2/24']);
    assert.deepEqual((await routes(r, 'qnbr3')).filter((x) => x.gateway).map((x) => x.dst).sort(), ['192.0.2.0/24', 'default']);
    await ns.run(['busybox', 'ping', '-c1', '-W2', '203.0.113.1']);
    const problems = await moveBack(r, rec);
    assert.deepEqual(problems, []);
    await deleteBridge(r, 'qnbr3');
    assert.equal((await link(r, 'lan0'))!.master, undefined);
    assert.deepEqual((await addrs(r, 'lan0')).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['198.51.100.2/24']);
    assert.deepEqual((await routes(r, 'lan0')).filter((x) => x.gateway).map((x) => x.dst).sort(), ['192.0.2.0/24', 'default']);
    await ns.run(['busybox', 'ping', '-c1', '-W2', '203.0.113.1']);
    pinger.kill('SIGKILL');
    assert.ok(replies > 0, 'the LAN answered while the uplink moved');
  });
});
