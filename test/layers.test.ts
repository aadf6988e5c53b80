// The layer order of src/ (DESIGN.md, README "How it is built"): every import points down or
// sideways, never up. This test reads every import of every source file (static, type-only
// and dynamic) and fails naming each edge that points up, so the order is a checked fact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');

/** Bottom first; directories on one row are peers and may import each other. */
export const LAYERS: string[][] = [
  ['util', 'common'],
  ['wire'],
  ['link'],
  ['switch'],
  ['stack'],
  ['services'],
  ['network'],
  ['host'],
  ['qemu'],
  ['config'],
  ['daemon'],
  ['cli'],
];

function rank(dir: string): number {
  const r = LAYERS.findIndex((row) => row.includes(dir));
  return r;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Relative specifiers imported by a file: `from '...'`, `import '...'` and `import('...')`. */
export function importsOf(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[1]);
  return out;
}

/** The top-level directory of src/ that a path is in. */
function layerDir(file: string): string {
  return path.relative(SRC, file).split(path.sep)[0];
}

export function upwardEdges(): string[] {
  const bad: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const from = layerDir(file);
    for (const spec of importsOf(fs.readFileSync(file, 'utf8'))) {
      const target = path.resolve(path.dirname(file), spec);
      if (!target.startsWith(SRC + path.sep)) {
        bad.push(`${path.relative(SRC, file)} imports ${spec}, outside src/`);
        continue;
      }
      const to = layerDir(target);
      if (rank(to) > rank(from)) bad.push(`${path.relative(SRC, file)} (${from}) imports ${path.relative(SRC, target)} (${to}), which is above it`);
    }
  }
  return bad;
}

test('layers: every directory of src/ has a place in the layer order', () => {
  const dirs = fs.readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  const unknown = dirs.filter((d) => rank(d) < 0);
  assert.deepEqual(unknown, [], `add these to LAYERS in test/layers.test.ts: ${unknown.join(', ')}`);
  for (const f of fs.readdirSync(SRC)) assert.ok(fs.statSync(path.join(SRC, f)).isDirectory(), `src/${f}: sources live in a layer directory`);
});

test('layers: no import points up the layer order', () => {
  assert.deepEqual(upwardEdges(), []);
});

test('layers: the import reader sees every form of import (so the check above can fail)', () => {
  const text = [
    "import { a } from '../daemon/x.ts';",
    "import type { B } from '../config/y.ts';",
    "export { c } from './z.ts';",
    "import '../cli/side-effect.ts';",
    "const m = await import('../qemu/lazy.ts');",
    "import fs from 'node:fs';",
  ].join('\n');
  assert.deepEqual(importsOf(text), ['../daemon/x.ts', '../config/y.ts', './z.ts', '../cli/side-effect.ts', '../qemu/lazy.ts']);
  assert.ok(rank('daemon') > rank('wire'));
  assert.ok(rank('network') < rank('qemu'));
});
