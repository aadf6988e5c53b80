// A JSON Schema (draft 2020-12) checker for the keywords qnet's schemas use: type, enum,
// const, properties, required, additionalProperties, items, min/maxItems, minLength,
// minimum/maximum, pattern, oneOf and local $ref. An unknown keyword is an error, so the
// checker never silently accepts what it does not understand.

type Schema = Record<string, unknown>;

const KNOWN = new Set(['$schema', '$id', '$defs', '$ref', 'title', 'description', 'default', 'type', 'enum', 'const', 'properties', 'required',
  'additionalProperties', 'items', 'minItems', 'maxItems', 'minLength', 'minimum', 'maximum', 'pattern', 'oneOf']);

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** Errors of `value` against `schema` (empty: valid). */
export function validate(value: unknown, schema: Schema, root: Schema = schema, at = '$'): string[] {
  for (const k of Object.keys(schema)) if (!KNOWN.has(k)) throw new Error(`json-schema: keyword '${k}' at ${at} is not supported`);
  if (typeof schema.$ref === 'string') {
    const m = /^#\/\$defs\/(.+)$/.exec(schema.$ref);
    if (!m) throw new Error(`json-schema: only local $defs refs are supported (${schema.$ref})`);
    return validate(value, (root.$defs as Record<string, Schema>)[m[1]], root, at);
  }
  const errs: string[] = [];
  const t = typeOf(value);
  if (schema.type !== undefined) {
    const want = Array.isArray(schema.type) ? schema.type as string[] : [schema.type as string];
    if (!want.some((w) => w === t || (w === 'number' && t === 'integer'))) return [`${at}: ${t}, not ${want.join('|')}`];
  }
  if (schema.enum && !(schema.enum as unknown[]).includes(value)) errs.push(`${at}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`);
  if ('const' in schema && schema.const !== value) errs.push(`${at}: not ${JSON.stringify(schema.const)}`);
  if (typeof value === 'string') {
    if (typeof schema.minLength === 'number' && value.length < schema.minLength) errs.push(`${at}: shorter than ${schema.minLength}`);
    if (typeof schema.pattern === 'string' && !new RegExp(schema.pattern, 'u').test(value)) errs.push(`${at}: '${value}' does not match ${schema.pattern}`);
  }
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) errs.push(`${at}: below ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) errs.push(`${at}: above ${schema.maximum}`);
  }
  if (Array.isArray(value)) {
    if (typeof schema.minItems === 'number' && value.length < schema.minItems) errs.push(`${at}: fewer than ${schema.minItems} items`);
    if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) errs.push(`${at}: more than ${schema.maxItems} items`);
    if (schema.items) value.forEach((v, i) => errs.push(...validate(v, schema.items as Schema, root, `${at}[${i}]`)));
  }
  if (t === 'object') {
    const o = value as Record<string, unknown>;
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const r of (schema.required ?? []) as string[]) if (!(r in o)) errs.push(`${at}: missing '${r}'`);
    for (const [k, v] of Object.entries(o)) {
      if (k in props) errs.push(...validate(v, props[k], root, `${at}.${k}`));
      else if (schema.additionalProperties === false) errs.push(`${at}: unknown key '${k}'`);
      else if (typeof schema.additionalProperties === 'object') errs.push(...validate(v, schema.additionalProperties as Schema, root, `${at}.${k}`));
    }
  }
  if (schema.oneOf) {
    const ok = (schema.oneOf as Schema[]).filter((s) => validate(value, s, root, at).length === 0).length;
    if (ok !== 1) errs.push(`${at}: matches ${ok} of the oneOf alternatives, not exactly one`);
  }
  return errs;
}
