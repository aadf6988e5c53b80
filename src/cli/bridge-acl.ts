// `qnet bridge-acl check|allow|deny BRIDGE`: QEMU's own bridge helper ACL (/etc/qemu/bridge.conf),
// read with the stock helper's exact semantics (src/host/bridge-acl.ts), explained line by line,
// and edited without touching the rest of the file.
import fs from 'node:fs';
import { aclVerdict, DEFAULT_ACL_FILE, editAcl, parseAcl } from '../host/bridge-acl.ts';
import { HELPER_PATHS, hasNetAdminCap } from '../host/doctor-checks.ts';
import { hostNative } from '../host/native.ts';
import { describeUid, userById, userByName } from '../host/users.ts';
import { json, parse, runCommand, UsageError } from './common.ts';

const USAGE = `usage: qnet bridge-acl check BRIDGE [--user U] [--conf FILE] [--json]
       qnet bridge-acl allow|deny BRIDGE [--conf FILE]

QEMU's qemu-bridge-helper (-netdev bridge) only opens bridges its ACL allows: allow NAME,
deny NAME, allow all, deny all, include FILE; deny wins; the default is deny.
  check        explain the stock helper's verdict for BRIDGE (exit 0: allowed, 1: refused)
  allow, deny  edit FILE: drop the opposite rule for BRIDGE, add this one (atomically)
  --conf FILE  the ACL file (default ${DEFAULT_ACL_FILE}, the only one the stock helper reads)
  --user U     also say whether user U can run the stock helper at all (setuid/capabilities)
  --json       the verdict as JSON`;

/** Can `uid` run the stock helper usefully (it needs CAP_NET_ADMIN)? One line per helper found. */
export function helperUsableBy(uid: number): { path: string; usable: boolean; why: string }[] {
  return HELPER_PATHS.filter((p) => fs.existsSync(p)).map((p) => {
    if (uid === 0) return { path: p, usable: true, why: 'root needs no setuid' };
    const st = fs.statSync(p);
    if ((st.mode & 0o4000) && st.uid === 0) return { path: p, usable: true, why: 'it is setuid root' };
    let cap = false;
    try { cap = hasNetAdminCap(hostNative().fileCapability(p)); } catch { /* none */ }
    if (cap) return { path: p, usable: true, why: 'it has cap_net_admin' };
    return { path: p, usable: false, why: 'it is neither setuid root nor given cap_net_admin, so it cannot make a tap for this user (qnet bridge-helper can: the root qnet daemon makes it)' };
  });
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('bridge-acl', USAGE, async () => {
    const { values, positionals } = parse(argv, { user: { type: 'string' }, conf: { type: 'string' } });
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    const [verb, bridge, ...rest] = positionals;
    if (!verb || !['check', 'allow', 'deny'].includes(verb)) throw new UsageError('give check, allow or deny');
    if (!bridge) throw new UsageError(`give the bridge: qnet bridge-acl ${verb} BRIDGE`);
    if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
    const file = values.conf ?? DEFAULT_ACL_FILE;
    if (verb === 'allow' || verb === 'deny') {
      const e = editAcl(verb, bridge, file);
      if (!e.changed) process.stdout.write(`${file} already has \`${verb} ${bridge}\`; unchanged\n`);
      for (const r of e.removed) process.stdout.write(`${file}: removed \`${r.trim()}\`\n`);
      if (e.added) process.stdout.write(`${file}: added \`${e.added}\`\n`);
      const wanted = verb === 'allow';
      process.stdout.write(`verdict for ${bridge}: ${e.verdict.allowed ? 'allowed' : 'refused'}: ${e.verdict.reason}\n`);
      if (e.verdict.allowed !== wanted) {
        process.stderr.write(`qnet bridge-acl: ${bridge} is still ${e.verdict.allowed ? 'allowed' : 'refused'}: the deciding rule is outside the lines qnet edits\n`);
        return 1;
      }
      return 0;
    }
    const v = aclVerdict(bridge, parseAcl(file), file);
    let uid: number | undefined;
    if (values.user !== undefined) {
      const u = /^\d+$/.test(values.user) ? userById(Number(values.user)) ?? { uid: Number(values.user) } : userByName(values.user);
      if (!u) throw new UsageError(`no user '${values.user}' in /etc/passwd`);
      uid = u.uid;
    }
    const helpers = uid === undefined ? [] : helperUsableBy(uid);
    if (values.json) {
      process.stdout.write(json({ bridge, file, allowed: v.allowed, reason: v.reason, matched: v.matched, ignored: v.ignored, helpers: uid === undefined ? undefined : helpers }));
    } else {
      process.stdout.write(`${bridge}: ${v.allowed ? 'allowed' : 'refused'} by qemu-bridge-helper: ${v.reason}\n`);
      for (const p of v.ignored) process.stdout.write(`  note: the helper prints and ignores an error in ${p.file}${p.line ? `:${p.line}` : ''}: ${p.message}\n`);
      if (uid !== undefined) {
        if (!helpers.length) process.stdout.write(`  no qemu-bridge-helper installed (looked in ${HELPER_PATHS.join(', ')})\n`);
        for (const h of helpers) process.stdout.write(`  as ${describeUid(uid)}: ${h.path} ${h.usable ? 'works' : 'fails'}: ${h.why}\n`);
      }
    }
    return v.allowed && (uid === undefined || helpers.some((h) => h.usable)) ? 0 : 1;
  });
}
