// qnet doctor: the framework (a failing check is one finding, the others still run), the
// pieces that read kernel data (foreign nftables drops, file capabilities, allow lists), and
// the command against a namespace whose firewall drops forwarded traffic in another table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { doctorExitCode, formatFindings, runDoctor, type DoctorCheck } from '../../src/host/doctor.ts';
import { hasNetAdminCap } from '../../src/host/doctor-checks.ts';
import { foreignDrops } from '../../src/host/nft.ts';
import { checkAllow } from '../../src/host/users.ts';
import { localRunner } from '../../src/host/run.ts';
import { createNetns } from '../helpers/netns.ts';
import { repoRoot } from '../helpers/user-net.ts';

const ctx = { runner: localRunner(), uid: 1000, gids: [1000], bridges: [], aclFile: '/nonexistent', options: {} };

test('doctor: a check that throws is one failure; the others still run, in order', async () => {
  const checks: DoctorCheck[] = [
    { id: 'a', title: 'first', run: () => [{ check: 'a', status: 'ok', summary: 'fine' }] },
    { id: 'b', title: 'second', run: () => { throw new Error('boom'); } },
    { id: 'c', title: 'third', run: async () => [{ check: 'c', status: 'warn', summary: 'hmm', detail: ['more'], fix: 'do this' }] },
  ];
  const f = await runDoctor(checks, ctx);
  assert.deepEqual(f.map((x) => [x.check, x.status]), [['a', 'ok'], ['b', 'fail'], ['c', 'warn']]);
  assert.equal(f[1].summary, 'second: the check itself failed: boom');
  assert.equal(formatFindings(f), 'ok    fine\nFAIL  second: the check itself failed: boom\nWARN  hmm\n        more\n        fix: do this\n1 problem, 1 warning\n');
  assert.equal(doctorExitCode(f), 1);
  assert.equal(doctorExitCode(f.filter((x) => x.status !== 'fail')), 0);
});

test('doctor: drops in other tables at the forward and input hooks are found, qnet\'s own are not', () => {
  const items = [
    { chain: { family: 'ip', table: 'filter', name: 'FORWARD', hook: 'forward', policy: 'drop' } },
    { chain: { family: 'inet', table: 'fw', name: 'in', hook: 'input', policy: 'accept' } },
    { rule: { family: 'inet', table: 'fw', chain: 'in', expr: [{ match: {} }, { drop: null }] } },
    { rule: { family: 'inet', table: 'fw', chain: 'in', expr: [{ accept: null }] } },
    { chain: { family: 'ip', table: 'nat', name: 'POST', hook: 'postrouting', policy: 'drop' } },
    { chain: { family: 'ip', table: 'qnet-lab', name: 'forward', hook: 'forward', policy: 'drop' } },
    { rule: { family: 'ip', table: 'qnet-lab', chain: 'guest_input', expr: [{ reject: null }] } },
  ];
  assert.deepEqual(foreignDrops(items), [
    { table: 'ip filter', chain: 'FORWARD', hook: 'forward', what: 'policy drop' },
    { table: 'inet fw', chain: 'in', hook: 'input', what: '1 drop/reject rule' },
  ]);
});

test('doctor: cap_net_admin is read from the permitted set of security.capability', () => {
  const v2 = (permitted: number) => { const b = Buffer.alloc(20); b.writeUInt32LE(0x02000001, 0); b.writeUInt32LE(permitted, 4); return b; };
  assert.equal(hasNetAdminCap(v2(1 << 12)), true);
  assert.equal(hasNetAdminCap(v2(1 << 13)), false);
  assert.equal(hasNetAdminCap(null), false);
  assert.equal(hasNetAdminCap(Buffer.alloc(4)), false);
});

test('allow lists: root and the owner always, then users by name or uid, groups by name or gid', () => {
  const nobody = { uid: 65534, gid: 65534, groups: [] };
  assert.deepEqual(checkAllow([], { uid: 0, gid: 0, groups: [] }, 1000), { allowed: true, reason: 'root' });
  assert.deepEqual(checkAllow([], { uid: 1000, gid: 1000, groups: [] }, 1000), { allowed: true, reason: "the daemon's own user" });
  assert.equal(checkAllow(['nobody'], nobody, 0).allowed, true);
  assert.equal(checkAllow(['65534'], nobody, 0).allowed, true);
  assert.equal(checkAllow(['@nogroup'], nobody, 0).allowed, true);
  assert.equal(checkAllow(['@65534'], nobody, 0).allowed, true);
  assert.equal(checkAllow(['@4242'], { uid: 5, gid: 5, groups: [4242] }, 0).allowed, true, 'supplementary groups count');
  assert.deepEqual(checkAllow(['root', '@sudo'], nobody, 0), { allowed: false, reason: 'not in the network\'s allow list (root, @sudo)' });
  assert.deepEqual(checkAllow([], nobody, 0), { allowed: false, reason: 'the network has no allow list (only root may attach VMs)' });
});

test('qnet doctor --netns: a forward drop in another table is a warning with a fix', { skip: process.getuid?.() !== 0 && 'needs root (a namespace)' }, async () => {
  const ns = await createNetns();
  try {
    await ns.run(['nft', '-f', '-'], { input: 'table ip filter {\n chain FORWARD {\n  type filter hook forward priority 0; policy drop;\n }\n}\n' });
    const r = spawnSync(process.execPath, [path.join(repoRoot, 'bin', 'qnet.js'), 'doctor', '--netns', ns.name, '--bridge', 'qnbr0', '--acl', '/nonexistent.conf'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^WARN  table ip filter, chain FORWARD \(hook forward\) has policy drop: forwarded guest traffic dropped there is dropped, whatever qnet's own table accepts$/m);
    assert.match(r.stdout, /^ok    net\.ipv4\.ip_forward = 0 on network namespace qnt-/m);
    assert.match(r.stdout, /^info  \/nonexistent\.conf does not exist: the stock helper refuses every bridge$/m);
  } finally {
    await ns.delete();
  }
});
