import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CASES } from './cases.ts';
import { shellJoin, shellSplit, stripProgram } from '../../src/qemu/args.ts';
import { lint } from '../../src/qemu/lint.ts';
import { convert } from '../../src/qemu/convert.ts';
import { checkLibvirt, shapesOf } from './libvirt-oracle.ts';

const shapesSeen = new Set<string>();

export function caseArgs(s: string): string[] {
  return stripProgram(shellSplit(s)).args;
}

test('the table has at least 80 command lines', () => {
  assert.ok(CASES.length >= 80, `only ${CASES.length} cases`);
  assert.equal(new Set(CASES.map((c) => c.name)).size, CASES.length, 'case names are unique');
});

for (const c of CASES) {
  test(`[${c.src}] ${c.name}`, () => {
    const argv = caseArgs(c.args);
    const r = lint(argv);
    const shown = r.diagnostics.map((d) => `${d.severity} ${d.code}: ${d.message}`).join('\n');
    assert.equal(r.ok, c.ok, `lint verdict for ${c.args}\n${shown}`);
    for (const code of c.codes ?? []) {
      assert.ok(r.diagnostics.some((d) => d.code === code), `expected a '${code}' diagnostic for ${c.args}\n${shown}`);
    }
    // Every diagnostic names the option it is about (or is global) and errors say how to fix them.
    for (const d of r.diagnostics) {
      if (d.severity === 'error' && !['user', 'bad-value', 'syntax', 'netdev-in-use', 'bad-port', 'missing-option'].includes(d.code)) {
        assert.ok(d.hint, `error without a hint: ${d.code} ${d.message}`);
      }
    }
    const conv = convert(argv);
    if (c.convert === null) assert.equal(conv.ok, false, 'convert should refuse');
    else if (c.convert !== undefined) {
      assert.ok(conv.ok, `convert failed:\n${shown}`);
      assert.equal(shellJoin(conv.args!), c.convert);
    }
    if (c.nic !== undefined) {
      const n = convert(argv, 'nic');
      assert.ok(n.ok);
      assert.equal(shellJoin(n.args!), c.nic);
    }
    // What convert prints must itself lint clean of errors when the input did.
    if (c.ok && conv.ok) {
      const again = lint(conv.args!);
      assert.ok(again.ok, `converted form has errors: ${shellJoin(conv.args!)}\n${again.diagnostics.map((d) => d.message).join('\n')}`);
      const n = convert(argv, 'nic');
      assert.ok(lint(n.args!).ok, `--to nic form has errors: ${shellJoin(n.args!)}`);
      const x = convert(argv, 'libvirt');
      assert.ok(x.ok && x.xml, 'convert --to libvirt');
      checkLibvirt(conv.args!, x.xml);
      for (const sh of shapesOf(x.xml)) shapesSeen.add(sh);
    }
  });
}

// Every <interface> type the converter can emit, and <hostdev>, comes up in the table (and
// so is checked against the libvirt oracle above at least once).
test('the table covers every libvirt shape', () => {
  assert.deepEqual([...shapesSeen].sort(), ['bridge', 'client', 'ethernet', 'hostdev', 'mcast', 'server', 'udp', 'user', 'vde', 'vdpa', 'vhostuser']);
});
