// qemu-bridge-helper's ACL (/etc/qemu/bridge.conf), with the stock helper's exact semantics
// (qemu-bridge-helper.c, parse_acl_file and main), so `qnet bridge-acl check` predicts what
// QEMU's own helper will do, and explains why:
//
//   - the file is read in fgets() chunks of at most 4095 bytes (a longer line is split); C
//     string functions stop at a NUL byte;
//   - leading ASCII whitespace is skipped; a line whose first other character is '#', or an
//     empty line, is ignored (a '#' later in a line is *not* a comment);
//   - the command ends at the first space anywhere in the line, or failing that the first tab;
//     no separator at all: "Invalid config line" (a parse error);
//   - the argument is the rest, stripped of whitespace at both ends;
//   - an argument of 16 bytes or more (IFNAMSIZ) is an error, except for `include`;
//   - `allow NAME` / `deny NAME`, `allow all` / `deny all`; `include FILE` parses FILE (a path
//     relative to the helper's working directory) into the same list and ignores its errors
//     (rules read before an error in it stay); any other command is an error;
//   - an error in the top file makes the helper fail ("failed to parse default acl file"),
//     and so does a missing top file;
//   - verdict: allowed if any allow (or allow all) matches and no deny (or deny all) does:
//     deny wins, and the default is deny. A bridge name of 16 bytes or more is refused first.
//
// The editing side (`qnet bridge-acl allow|deny`) changes only lines of the file itself: it
// removes the opposite verb's lines for that bridge, appends the wanted one if missing, and
// writes atomically; a verdict still decided elsewhere (an include, `deny all`) is reported.
import fs from 'node:fs';
import path from 'node:path';

export const DEFAULT_ACL_FILE = '/etc/qemu/bridge.conf';
const IFNAMSIZ = 16;
const FGETS = 4096;
const MAX_DEPTH = 256;

export interface AclRule {
  verb: 'allow' | 'deny';
  /** the interface name, or null for `all` */
  iface: string | null;
  file: string;
  line: number;
  text: string;
}

export interface AclProblem { file: string; line: number; message: string; fatal: boolean }

export interface AclParse {
  rules: AclRule[];
  /** errors: fatal ones make the helper fail, the others (in includes) are ignored by it */
  problems: AclProblem[];
  /** the top file could not be parsed: the helper fails before looking at the rules */
  failed: boolean;
  files: string[];
}

export type ReadFile = (file: string) => Buffer;

const isSpace = (c: number): boolean => c === 0x20 || (c >= 0x09 && c <= 0x0d);

/** fgets(line, 4096, f) over the whole file: chunks of at most 4095 bytes, each ending at '\n' if one comes first. */
function fgetsChunks(buf: Buffer): { text: Buffer; line: number }[] {
  const out: { text: Buffer; line: number }[] = [];
  let off = 0;
  let line = 1;
  while (off < buf.length) {
    const nl = buf.indexOf(0x0a, off);
    const end = Math.min(nl < 0 ? buf.length : nl + 1, off + FGETS - 1);
    out.push({ text: buf.subarray(off, end), line });
    if (end > 0 && buf[end - 1] === 0x0a) line++;
    off = end;
  }
  return out;
}

/** Parse one ACL file the way parse_acl_file() does; appends to `into`. false = the file failed. */
function parseInto(file: string, read: ReadFile, into: AclParse, depth: number, top: boolean): boolean {
  let data: Buffer;
  try {
    if (depth > MAX_DEPTH) throw new Error('too many nested includes');
    data = read(file);
  } catch (e) {
    into.problems.push({ file, line: 0, message: `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, fatal: top });
    return false;
  }
  into.files.push(file);
  for (const chunk of fgetsChunks(data)) {
    const nul = chunk.text.indexOf(0);
    const s = nul < 0 ? chunk.text : chunk.text.subarray(0, nul);
    let p = 0;
    while (p < s.length && isSpace(s[p])) p++;
    if (p >= s.length || s[p] === 0x23 /* # */) continue;
    const rest = s.subarray(p);
    let sep = rest.indexOf(0x20);
    if (sep < 0) sep = rest.indexOf(0x09);
    const shown = s.toString('latin1').replace(/\n$/, '');
    if (sep < 0) {
      into.problems.push({ file, line: chunk.line, message: `Invalid config line: ${shown.trim()}`, fatal: top });
      return false;
    }
    const cmd = rest.subarray(0, sep).toString('latin1');
    let a = sep + 1;
    while (a < rest.length && isSpace(rest[a])) a++;
    let e = rest.length;
    while (e > a && isSpace(rest[e - 1])) e--;
    const arg = rest.subarray(a, e).toString('latin1');
    if (cmd !== 'include' && Buffer.byteLength(arg, 'latin1') >= IFNAMSIZ) {
      into.problems.push({ file, line: chunk.line, message: `name \`${arg}' too long: ${arg.length}`, fatal: top });
      return false;
    }
    if (cmd === 'allow' || cmd === 'deny') {
      into.rules.push({ verb: cmd, iface: arg === 'all' ? null : arg, file, line: chunk.line, text: shown.trim() });
    } else if (cmd === 'include') {
      parseInto(arg, read, into, depth + 1, false); // errors ignored, as the helper does
    } else {
      into.problems.push({ file, line: chunk.line, message: `Unknown command \`${cmd}'`, fatal: top });
      return false;
    }
  }
  return true;
}

export function parseAcl(file = DEFAULT_ACL_FILE, read: ReadFile = (f) => fs.readFileSync(f)): AclParse {
  const out: AclParse = { rules: [], problems: [], failed: false, files: [] };
  out.failed = !parseInto(file, read, out, 0, true);
  return out;
}

export interface AclVerdict {
  bridge: string;
  allowed: boolean;
  /** one line: why */
  reason: string;
  /** the rules that matched, in order */
  matched: AclRule[];
  /** ignored errors in included files */
  ignored: AclProblem[];
}

const where = (r: { file: string; line: number }): string => `${r.file}:${r.line}`;

/** The stock helper's verdict for a bridge, with the reason. */
export function aclVerdict(bridge: string, parse: AclParse, file = DEFAULT_ACL_FILE): AclVerdict {
  const ignored = parse.problems.filter((p) => !p.fatal);
  if (Buffer.byteLength(bridge) >= IFNAMSIZ) {
    return { bridge, allowed: false, reason: `the bridge name '${bridge}' is ${Buffer.byteLength(bridge)} bytes; the helper refuses names of 16 bytes or more`, matched: [], ignored };
  }
  if (parse.failed) {
    const p = parse.problems.find((x) => x.fatal)!;
    return { bridge, allowed: false, reason: `the helper fails before checking any rule: it cannot parse ${file} (${p.line ? `line ${p.line}: ` : ''}${p.message})`, matched: [], ignored };
  }
  const name = Buffer.from(bridge, 'utf8').toString('latin1'); // rules hold bytes, as strcmp sees them
  const matched = parse.rules.filter((r) => r.iface === null || r.iface === name);
  const allows = matched.filter((r) => r.verb === 'allow');
  const denies = matched.filter((r) => r.verb === 'deny');
  let reason: string;
  if (denies.length) {
    reason = `denied by ${where(denies[0])} (${denies[0].text})${allows.length ? `; deny wins over the allow at ${where(allows[0])}` : ''}`;
  } else if (allows.length) {
    reason = `allowed by ${where(allows[0])} (${allows[0].text})`;
  } else {
    reason = `no rule allows '${bridge}' (the default is deny; add \`allow ${bridge}\` to ${file})`;
  }
  return { bridge, allowed: allows.length > 0 && denies.length === 0, reason, matched, ignored };
}

export interface AclEdit { changed: boolean; removed: string[]; added: string | null; verdict: AclVerdict }

/**
 * Make `file` allow (or deny) `bridge`: drop the file's own lines with the opposite verb for
 * that bridge, append the wanted line unless present, write atomically (0644, creating the
 * directory). The verdict afterwards is computed with includes, so a deny elsewhere shows.
 */
export function editAcl(verb: 'allow' | 'deny', bridge: string, file = DEFAULT_ACL_FILE): AclEdit {
  if (Buffer.byteLength(bridge) >= IFNAMSIZ || /\s/.test(bridge) || bridge === '') throw new Error(`'${bridge}' cannot be a bridge name (1-15 bytes, no spaces)`);
  let text = '';
  try { text = fs.readFileSync(file, 'latin1'); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
  const lines = text === '' ? [] : text.replace(/\n$/, '').split('\n');
  const other = verb === 'allow' ? 'deny' : 'allow';
  const parsed = (l: string): { cmd: string; arg: string } | null => {
    const m = /^[ \t]*(\S+)[ \t]+(.*?)\s*$/.exec(l);
    return m && !m[1].startsWith('#') ? { cmd: m[1], arg: m[2] } : null;
  };
  const removed: string[] = [];
  const kept = lines.filter((l) => {
    const p = parsed(l);
    if (p && p.cmd === other && p.arg === bridge) { removed.push(l); return false; }
    return true;
  });
  const has = kept.some((l) => { const p = parsed(l); return p !== null && p.cmd === verb && p.arg === bridge; });
  const added = has ? null : `${verb} ${bridge}`;
  if (added) kept.push(added);
  const changed = removed.length > 0 || added !== null;
  if (changed) {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    const tmp = `${file}.qnet-${process.pid}.tmp`;
    fs.writeFileSync(tmp, kept.join('\n') + '\n', { mode: 0o644 });
    fs.renameSync(tmp, file);
  }
  return { changed, removed, added, verdict: aclVerdict(bridge, parseAcl(file), file) };
}
