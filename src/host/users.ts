// Users and groups from /etc/passwd and /etc/group (Node has no getpwnam), for a network's
// `allow: [user, "@group"]` list and for messages naming the caller. Read fresh each time:
// the files are small and an added user must not need a daemon restart.
import fs from 'node:fs';

export interface UserEntry { name: string; uid: number; gid: number; home: string }
export interface GroupEntry { name: string; gid: number; members: string[] }

function rows(file: string): string[][] {
  let text = '';
  try { text = fs.readFileSync(file, 'utf8'); } catch { return []; }
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));
}

export function users(file = '/etc/passwd'): UserEntry[] {
  return rows(file).filter((c) => c.length >= 4).map((c) => ({ name: c[0], uid: Number(c[2]), gid: Number(c[3]), home: c[5] ?? '' }));
}

export function groups(file = '/etc/group'): GroupEntry[] {
  return rows(file).filter((c) => c.length >= 3).map((c) => ({ name: c[0], gid: Number(c[2]), members: (c[3] ?? '').split(',').filter(Boolean) }));
}

export function userByName(name: string): UserEntry | undefined { return users().find((u) => u.name === name); }
export function userById(uid: number): UserEntry | undefined { return users().find((u) => u.uid === uid); }
export function groupByName(name: string): GroupEntry | undefined { return groups().find((g) => g.name === name); }
export function groupById(gid: number): GroupEntry | undefined { return groups().find((g) => g.gid === gid); }

/** `nobody (uid 65534)` */
export function describeUid(uid: number): string {
  const u = userById(uid);
  return u ? `${u.name} (uid ${uid})` : `uid ${uid}`;
}

/** A user's groups by the files: the primary group and every group listing the user. */
export function gidsOfUser(u: UserEntry): number[] {
  return [...new Set([u.gid, ...groups().filter((g) => g.members.includes(u.name)).map((g) => g.gid)])];
}

export interface Principal { uid: number; gid: number; groups: number[] }

export interface AllowCheck { allowed: boolean; reason: string }

/**
 * Is a caller (credentials from the socket, never from the request) in an allow list?
 * Entries: a user name, a numeric uid, `@group` or `@gid`. Root always may.
 */
export function checkAllow(allow: string[], who: Principal, owner = process.getuid?.() ?? 0): AllowCheck {
  if (who.uid === 0) return { allowed: true, reason: 'root' };
  if (who.uid === owner) return { allowed: true, reason: "the daemon's own user" };
  const gids = new Set([who.gid, ...who.groups]);
  for (const e of allow) {
    if (e.startsWith('@')) {
      const g = /^\d+$/.test(e.slice(1)) ? groupById(Number(e.slice(1))) ?? { name: e.slice(1), gid: Number(e.slice(1)), members: [] } : groupByName(e.slice(1));
      if (g && gids.has(g.gid)) return { allowed: true, reason: `member of group ${g.name} (allow: ${e})` };
    } else {
      const u = /^\d+$/.test(e) ? { uid: Number(e) } : userByName(e);
      if (u && u.uid === who.uid) return { allowed: true, reason: `allow: ${e}` };
    }
  }
  return { allowed: false, reason: allow.length ? `not in the network's allow list (${allow.join(', ')})` : 'the network has no allow list (only root may attach VMs)' };
}
