// qnet's reading of qemu-bridge-helper's ACL against the real helper.
//
// A table of bridge.conf files (with include files in a temp directory) and bridge names.
// Every case is checked twice: against the verdict written in the table, and against what
// /usr/lib/qemu/qemu-bridge-helper itself does with the same file. The stock helper reads
// only /etc/qemu/bridge.conf, so the test writes each case there: it runs only if that file
// (and so the directory) does not exist yet, and removes both afterwards. The helper runs in a
// network namespace this test creates, with no bridge in it: a helper that gets past the ACL
// fails at "failed to get mtu of bridge" (after making, in that namespace, a tap that dies
// with it), one that does not says "access denied by acl file" or "failed to parse".
//
// The editing commands (allow/deny) are checked on a file in the temp directory.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { aclVerdict, editAcl, parseAcl } from '../../src/host/bridge-acl.ts';
import { makeTempDir } from '../helpers/cleanup.ts';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { onExit } from '../helpers/cleanup.ts';
import { repoRoot } from '../helpers/user-net.ts';

const HELPER = '/usr/lib/qemu/qemu-bridge-helper';
const CONF = '/etc/qemu/bridge.conf';

interface Case { name: string; conf: string; includes?: Record<string, string>; bridge: string; allowed: boolean; failed?: boolean }

// `@INC/x` in conf text is replaced by the include directory.
const CASES: Case[] = [
  { name: 'empty file: default deny', conf: '', bridge: 'br0', allowed: false },
  { name: 'allow one', conf: 'allow br0\n', bridge: 'br0', allowed: true },
  { name: 'allow another', conf: 'allow br1\n', bridge: 'br0', allowed: false },
  { name: 'allow all', conf: 'allow all\n', bridge: 'qnbr7', allowed: true },
  { name: 'deny wins over allow', conf: 'allow br0\ndeny br0\n', bridge: 'br0', allowed: false },
  { name: 'deny before allow still wins', conf: 'deny br0\nallow br0\n', bridge: 'br0', allowed: false },
  { name: 'deny all wins over allow', conf: 'allow br0\ndeny all\n', bridge: 'br0', allowed: false },
  { name: 'allow all, deny one: others pass', conf: 'allow all\ndeny br1\n', bridge: 'br0', allowed: true },
  { name: 'allow all, deny one: that one fails', conf: 'allow all\ndeny br1\n', bridge: 'br1', allowed: false },
  { name: 'comments, blank lines, indentation', conf: '# a comment\n\n   \n\t# indented comment\n   allow br0\n', bridge: 'br0', allowed: true },
  { name: 'tab separator', conf: 'allow\tbr0\n', bridge: 'br0', allowed: true },
  { name: 'several spaces and trailing blanks', conf: 'allow    br0   \t \n', bridge: 'br0', allowed: true },
  { name: 'CRLF line ends', conf: 'allow br0\r\n', bridge: 'br0', allowed: true },
  { name: 'a # later in the line is part of the name', conf: 'allow br0 # mine\n', bridge: 'br0', allowed: false },
  { name: 'the first space ends the command even after a tab', conf: 'allow\tbr0 x\n', bridge: 'br0', allowed: false, failed: true },
  { name: 'no argument: invalid line', conf: 'allow br0\nallow\n', bridge: 'br0', allowed: false, failed: true },
  { name: 'unknown command', conf: 'allow br0\npermit br0\n', bridge: 'br0', allowed: false, failed: true },
  { name: 'name of 16 bytes is an error', conf: 'allow br0\nallow abcdefghijklmnop\n', bridge: 'br0', allowed: false, failed: true },
  { name: 'name of 15 bytes is fine', conf: 'allow abcdefghijklmno\n', bridge: 'abcdefghijklmno', allowed: true },
  { name: 'bridge name of 16 bytes is refused', conf: 'allow all\n', bridge: 'abcdefghijklmnop', allowed: false },
  { name: 'case matters', conf: 'allow BR0\n', bridge: 'br0', allowed: false },
  { name: 'include allows', conf: 'include @INC/a.conf\n', includes: { 'a.conf': 'allow br0\n' }, bridge: 'br0', allowed: true },
  { name: 'include denies', conf: 'allow all\ninclude @INC/a.conf\n', includes: { 'a.conf': 'deny br0\n' }, bridge: 'br0', allowed: false },
  { name: 'missing include is ignored', conf: 'include @INC/nope.conf\nallow br0\n', bridge: 'br0', allowed: true },
  { name: 'error in an include is ignored, rules before it stay', conf: 'include @INC/a.conf\n', includes: { 'a.conf': 'allow br0\nbogus br0\ndeny br0\n' }, bridge: 'br0', allowed: true },
  { name: 'nested include', conf: 'include @INC/a.conf\n', includes: { 'a.conf': 'include @INC/b.conf\n', 'b.conf': 'allow br0\n' }, bridge: 'br0', allowed: true },
  { name: 'include path with trailing blanks', conf: 'include   @INC/a.conf  \n', includes: { 'a.conf': 'allow br0\n' }, bridge: 'br0', allowed: true },
  { name: 'no newline at the end', conf: 'allow br0', bridge: 'br0', allowed: true },
  { name: 'a last line without argument or newline', conf: 'allow br0\nallow', bridge: 'br0', allowed: false, failed: true },
  { name: 'an argument that is only blanks names the empty bridge', conf: 'allow  \t\n', bridge: 'br0', allowed: false },
];

function expand(s: string, dir: string): string { return s.replace(/@INC/g, dir); }

/** Run the stock helper in the namespace; 'allow' when it got past the ACL. */
function realHelper(ns: Netns, bridge: string): Promise<{ verdict: 'allow' | 'deny' | 'failed'; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn('ip', ['netns', 'exec', ns.name, HELPER, '--use-vnet', '--fd=3', `--br=${bridge}`], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    let err = '';
    c.stderr!.on('data', (d: Buffer) => { err += d; });
    (c.stdio[3] as NodeJS.ReadableStream).on('data', () => {});
    (c.stdio[3] as NodeJS.ReadableStream).on('error', () => {});
    c.on('close', () => {
      const verdict = /failed to parse default acl file/.test(err) ? 'failed' : /access denied by acl file|too long/.test(err) ? 'deny' : 'allow';
      resolve({ verdict, stderr: err.trim() });
    });
  });
}

describe('bridge.conf: qnet agrees with qemu-bridge-helper', () => {
  const tmp = makeTempDir('acl-');
  let ns: Netns | undefined;
  let createdDir = false;
  let createdFile = false;
  const skip = !fs.existsSync(HELPER) ? `${HELPER} is not installed`
    : fs.existsSync(CONF) ? `${CONF} exists; the test only writes it when absent`
    : process.getuid?.() !== 0 ? 'needs root (writes /etc/qemu/bridge.conf, runs the helper in a namespace)' : '';

  before(async () => {
    if (skip) return;
    if (!fs.existsSync(path.dirname(CONF))) { fs.mkdirSync(path.dirname(CONF)); createdDir = true; }
    createdFile = true;
    const cleanup = () => {
      if (createdFile) fs.rmSync(CONF, { force: true });
      if (createdDir) fs.rmSync(path.dirname(CONF), { recursive: true, force: true });
    };
    onExit(cleanup);
    ns = await createNetns();
  });
  after(async () => {
    if (createdFile) fs.rmSync(CONF, { force: true });
    if (createdDir) fs.rmSync(path.dirname(CONF), { recursive: true, force: true });
    await ns?.delete();
    tmp.remove();
  });

  test('the table: qnet\'s verdict is the one written down and the real helper\'s', { skip: skip || false }, async () => {
    const rows: string[] = [];
    for (const [i, c] of CASES.entries()) {
      const dir = path.join(tmp.path, `case${i}`);
      fs.mkdirSync(dir);
      for (const [f, text] of Object.entries(c.includes ?? {})) fs.writeFileSync(path.join(dir, f), expand(text, dir));
      const conf = expand(c.conf, dir);
      fs.writeFileSync(CONF, conf);
      const ours = aclVerdict(c.bridge, parseAcl(CONF));
      const theirs = await realHelper(ns!, c.bridge);
      rows.push(`${c.name}: table ${c.allowed ? 'allow' : 'deny'}, qnet ${ours.allowed ? 'allow' : 'deny'}, helper ${theirs.verdict} (${theirs.stderr.split('\n')[0]})`);
      assert.equal(ours.allowed, c.allowed, `${c.name}: qnet says ${ours.reason}`);
      assert.equal(theirs.verdict === 'allow', c.allowed, `${c.name}: the real helper said ${JSON.stringify(theirs.stderr)}`);
      assert.equal(theirs.verdict === 'failed', c.failed === true, `${c.name}: parse failure expected ${c.failed === true}, helper said ${JSON.stringify(theirs.stderr)}`);
      assert.equal(/cannot parse/.test(ours.reason), c.failed === true, `${c.name}: qnet's reason: ${ours.reason}`);
    }
    if (process.env.QNET_E2E_VERBOSE) console.log(rows.join('\n'));
  });
});

describe('bridge.conf reasons and editing', () => {
  const tmp = makeTempDir('acl-edit-');
  after(() => tmp.remove());

  test('reasons name the deciding line', () => {
    const f = path.join(tmp.path, 'r.conf');
    fs.writeFileSync(f, '# mine\nallow br0\ndeny all\n');
    const v = aclVerdict('br0', parseAcl(f), f);
    assert.equal(v.allowed, false);
    assert.equal(v.reason, `denied by ${f}:3 (deny all); deny wins over the allow at ${f}:2`);
    fs.writeFileSync(f, 'allow br0\n');
    assert.equal(aclVerdict('br0', parseAcl(f), f).reason, `allowed by ${f}:1 (allow br0)`);
    assert.equal(aclVerdict('br1', parseAcl(f), f).reason, `no rule allows 'br1' (the default is deny; add \`allow br1\` to ${f})`);
    assert.match(aclVerdict('br0', parseAcl(path.join(tmp.path, 'missing.conf')), f).reason, /cannot parse .*cannot open: ENOENT/);
  });

  test('allow and deny edit only their own lines and keep the rest', () => {
    const f = path.join(tmp.path, 'e.conf');
    fs.writeFileSync(f, '# site policy\nallow br1\ndeny br0\n');
    const a = editAcl('allow', 'br0', f);
    assert.deepEqual([a.changed, a.removed, a.added, a.verdict.allowed], [true, ['deny br0'], 'allow br0', true]);
    assert.equal(fs.readFileSync(f, 'utf8'), '# site policy\nallow br1\nallow br0\n');
    assert.equal(editAcl('allow', 'br0', f).changed, false, 'allowing twice changes nothing');
    const d = editAcl('deny', 'br1', f);
    assert.deepEqual([d.removed, d.added, d.verdict.allowed], [['allow br1'], 'deny br1', false]);
    assert.equal(fs.readFileSync(f, 'utf8'), '# site policy\nallow br0\ndeny br1\n');
    // a deny elsewhere still wins, and the verdict says so
    const inc = path.join(tmp.path, 'inc.conf');
    fs.writeFileSync(inc, 'deny all\n');
    fs.appendFileSync(f, `include ${inc}\n`);
    const again = editAcl('allow', 'br0', f);
    assert.equal(again.changed, false);
    assert.equal(again.verdict.allowed, false);
    assert.equal(again.verdict.reason, `denied by ${inc}:1 (deny all); deny wins over the allow at ${f}:2`);
    assert.throws(() => editAcl('allow', 'abcdefghijklmnop', f), /cannot be a bridge name/);
  });
});

describe('qnet bridge-acl (the command)', () => {
  const tmp = makeTempDir('acl-cli-');
  after(() => tmp.remove());
  const qnetCli = (...args: string[]) => spawnSync(process.execPath, [path.join(repoRoot, 'bin', 'qnet.js'), 'bridge-acl', ...args], { encoding: 'utf8' });

  test('check explains and exits 1 when refused; allow edits the file and the verdict follows', () => {
    const f = path.join(tmp.path, 'bridge.conf');
    fs.writeFileSync(f, '# ours\ndeny qnbr0\n');
    const r1 = qnetCli('check', 'qnbr0', '--conf', f);
    assert.equal(r1.status, 1);
    assert.equal(r1.stdout, `qnbr0: refused by qemu-bridge-helper: denied by ${f}:2 (deny qnbr0)\n`);
    const r2 = qnetCli('allow', 'qnbr0', '--conf', f);
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(r2.stdout, `${f}: removed \`deny qnbr0\`\n${f}: added \`allow qnbr0\`\nverdict for qnbr0: allowed: allowed by ${f}:2 (allow qnbr0)\n`);
    const r3 = qnetCli('check', 'qnbr0', '--conf', f, '--json');
    assert.equal(r3.status, 0);
    assert.equal(JSON.parse(r3.stdout).allowed, true);
    assert.equal(qnetCli('frobnicate', 'x').status, 2);
  });
});
