// schema/qnet.schema.json (README: "Editors can validate against schema/qnet.schema.json")
// describes what the parser accepts: the same keys at every level (read from the parser's own
// "unknown key ... (known: ...)" errors), and the README's example qnet.yaml is valid for
// both the schema and the parser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { parseConfig } from '../../src/config/config.ts';
import { validate } from '../helpers/json-schema.ts';
import { makeTempDir } from '../helpers/cleanup.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const schema = JSON.parse(fs.readFileSync(path.join(root, 'schema', 'qnet.schema.json'), 'utf8')) as Record<string, any>;
const dirs = { runtimeDir: '/tmp/qnet-schema-test/run', stateDir: '/tmp/qnet-schema-test/state' };

/** The keys the parser knows at the place where `text` puts the key `zzz`. */
function parserKeys(text: string): string[] {
  try {
    parseConfig(text, 'q.yaml', dirs);
  } catch (e) {
    const m = /unknown key 'zzz' \(known: ([^)]*)\)/.exec((e as Error).message);
    if (m) return m[1].split(', ').sort();
    throw e;
  }
  throw new Error(`no unknown-key error for:\n${text}`);
}

const net = (extra: string) => `networks:\n  - name: a\n    subnet: 10.0.0.0/24\n${extra}`;
const defs = schema.$defs;
const keys = (o: { properties: Record<string, unknown> }) => Object.keys(o.properties).sort();
const mapAlternative = (p: { oneOf: { type?: string; properties?: Record<string, unknown> }[] }) => p.oneOf.find((x) => x.type === 'object') as { properties: Record<string, unknown> };

const PLACES: [string, string, string[]][] = [
  ['top level', `zzz: 1\n${net('')}`, keys(schema as never)],
  ['api', `api: { zzz: 1 }\n${net('')}`, keys(schema.properties.api)],
  ['a network', net('    zzz: 1\n'), keys(defs.network)],
  ['dhcp as a map', net('    dhcp: { start: 10.0.0.10, end: 10.0.0.20, zzz: 1 }\n'), keys(mapAlternative(defs.network.properties.dhcp))],
  ['hosts[]', net('    hosts: [{ mac: "52:54:00:00:00:01", ip: 10.0.0.5, zzz: 1 }]\n'), keys(defs.network.properties.hosts.items)],
  ['records[]', net('    records: [{ name: www, ip: 10.0.0.5, zzz: 1 }]\n'), keys(defs.network.properties.records.items)],
  ['forwards[]', net('    forwards: [{ hostPort: 80, guest: a, guestPort: 80, zzz: 1 }]\n'), keys(defs.forward)],
];

for (const [where, text, inSchema] of PLACES) {
  test(`schema: the keys of ${where} are the parser's`, () => {
    assert.deepEqual(inSchema, parserKeys(text));
  });
}

test('schema: objects allow no other keys (as the parser refuses them)', () => {
  const closed: string[] = [];
  const walk = (o: unknown, at: string): void => {
    if (!o || typeof o !== 'object') return;
    const s = o as Record<string, unknown>;
    if (s.properties && s.additionalProperties !== false) closed.push(at);
    for (const [k, v] of Object.entries(s)) walk(v, `${at}/${k}`);
  };
  walk(schema, '#');
  assert.deepEqual(closed, []);
});

test("schema: the README's example qnet.yaml is valid for the schema and for the parser", () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const block = /## Configuration \(`qnet\.yaml`\)\s+```yaml\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'the README has the example');
  const doc = YAML.parse(block[1]) as Record<string, any>;
  assert.deepEqual(validate(doc, schema), []);
  // the parser reads the token file: give it one where the example says
  const tmp = makeTempDir('schema-');
  const tokenFile = path.join(tmp.path, 'token');
  fs.writeFileSync(tokenFile, 'a-token-of-sixteen-or-more\n');
  const text = block[1].replace(doc.api.tokenFile, tokenFile);
  const c = parseConfig(text, 'README.md', dirs);
  assert.deepEqual(c.networks.map((n) => [n.name, n.mode]), (doc.networks as { name: string; mode?: string }[]).map((n) => [n.name, n.mode ?? 'nat']));
  assert.ok(c.networks.length >= 3, 'the example shows several networks');
  assert.equal(c.api.tcp?.token, 'a-token-of-sixteen-or-more');
  tmp.remove();
});

test('schema: the checker refuses what the parser refuses (an unknown key, an unknown mode, a bad port, no networks)', () => {
  const ok = { networks: [{ name: 'a', subnet: '10.0.0.0/24' }] };
  assert.deepEqual(validate(ok, schema), []);
  // records of both families, each matching one alternative only
  const both = { networks: [{ name: 'a', subnet: '10.0.0.0/24', subnet6: 'fd00:10::/64', records: [{ name: 'w', ip: '10.0.0.9' }, { name: 'w', ip: 'fd00:10::9' }] }] };
  assert.deepEqual(validate(both, schema), []);
  parseConfig(YAML.stringify(both), 'q.yaml', dirs);
  assert.notDeepEqual(validate({ networks: [{ name: 'a', subnet: '10.0.0.0/24', colour: 'red' }] }, schema), []);
  assert.notDeepEqual(validate({ networks: [{ name: 'a', mode: 'frobnicate', subnet: '10.0.0.0/24' }] }, schema), []);
  assert.notDeepEqual(validate({ networks: [{ name: 'a', subnet: '10.0.0.0/24', forwards: [{ hostPort: 70000, guest: 'x', guestPort: 1 }] }] }, schema), []);
  assert.notDeepEqual(validate({ networks: [] }, schema), []);
});
