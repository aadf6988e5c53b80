// Shared pieces of the kernel-network end-to-end tests (test/e2e/kernel-*.test.ts): a daemon
// run inside a test namespace, guests started there (by `qnet run`, or as plain QEMU with
// tap/bridge netdevs), as root or as the user nobody, and the namespace's view of nftables and
// links for before/after comparisons.
//
// Safety: everything runs inside namespaces the test made (`ip netns exec NS`); QEMU gets tap
// and bridge netdevs only there. nobody's QEMU reads a copy of the guest image in a temp
// directory (the cache is root's).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { guestQemuCommand, type BootOptions } from './guest.ts';
import { RunGuest } from './qnetd.ts';
import { repoRoot } from './user-net.ts';
import { waitFor } from './wait.ts';
import type { Netns } from './netns.ts';

export const NOBODY = 65534;
/** setpriv to nobody:nogroup with no supplementary groups; QEMU then has no KVM either */
export const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];
export const BIN = path.join(repoRoot, 'bin');

/** A directory nobody may read and traverse (chmod 0755 up the temp path we made). */
export function openUp(dir: string): void {
  fs.chmodSync(dir, 0o755);
}

/** Environment for a process run as nobody: its own HOME and runtime directory. */
export function nobodyEnv(base: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const home = path.join(base, 'nobody');
  fs.mkdirSync(path.join(home, 'run'), { recursive: true });
  for (const d of [home, path.join(home, 'run')]) { fs.chownSync(d, NOBODY, NOBODY); fs.chmodSync(d, 0o700); }
  return { ...process.env, HOME: home, XDG_RUNTIME_DIR: path.join(home, 'run'), XDG_STATE_HOME: path.join(home, 'state'), ...extra };
}

/** Rewrite QEMU's argv to use copies of -kernel/-initrd in `dir` (readable by anyone). */
export function readableImage(dir: string): (argv: string[]) => string[] {
  return (argv) => argv.map((a, i) => {
    if (i > 0 && (argv[i - 1] === '-kernel' || argv[i - 1] === '-initrd')) {
      const to = path.join(dir, `${argv[i - 1].slice(1)}-${path.basename(path.dirname(a))}-${path.basename(a)}`);
      fs.copyFileSync(a, to);
      fs.chmodSync(to, 0o644);
      return to;
    }
    return a;
  });
}

/**
 * A plain QEMU (no qnet run) with our own NIC arguments, inside `ns`, optionally as nobody;
 * its console is read like a `qnet run` guest's.
 */
export async function plainQemu(ns: Netns, name: string, guest: Omit<BootOptions, 'netArgs' | 'netnsName' | 'timeoutMs' | 'extraArgs'>,
  nic: string[], opts: { asNobody?: boolean; env?: NodeJS.ProcessEnv; imageDir?: string } = {}): Promise<RunGuest> {
  const cmd = await guestQemuCommand({ name, ...guest, ...(opts.asNobody ? { accel: 'tcg' as const } : {}) });
  let argv = [...cmd.argv, ...nic];
  if (opts.asNobody) argv = readableImage(opts.imageDir!)(argv);
  const full = ['ip', 'netns', 'exec', ns.name, 'setpriv', '--pdeathsig', 'KILL', ...(opts.asNobody ? AS_NOBODY.slice(1) : []), ...argv];
  const child = spawn(full[0], full.slice(1), { cwd: opts.imageDir ?? repoRoot, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
  return new RunGuest(child, name, cmd.cleanup);
}

/** Busybox ping reply lines (`64 bytes from A: seq=N ...`) with their arrival times. */
export function pingReplies(g: RunGuest, from: string): { t: number; seq: number }[] {
  const re = new RegExp(`^64 bytes from ${from.replace(/\./g, '\\.')}: seq=(\\d+)`);
  return g.lines.flatMap((l) => { const m = re.exec(l.line); return m ? [{ t: l.t, seq: Number(m[1]) }] : []; });
}

/** Wait for cond() with a deadline (a hang guard, not a timing assertion). */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string, diag: () => string = () => ''): Promise<void> {
  await waitFor(cond, { what, timeoutMs: ms, diag, intervalMs: 20 });
}

/** Interface names in the namespace. */
export async function linkNames(ns: Netns): Promise<string[]> {
  return (JSON.parse(await ns.ip('-json', 'link', 'show')) as { ifname: string }[]).map((l) => l.ifname).sort();
}

/** Counters of rules carrying `comment "NAME"` in a table (nft -j). */
export async function nftCounters(ns: Netns, family: string, table: string): Promise<Record<string, number>> {
  const out = JSON.parse(await ns.run(['nft', '-j', 'list', 'table', family, table])) as { nftables: { rule?: { comment?: string; expr: { counter?: { packets: number } }[] } }[] };
  const r: Record<string, number> = {};
  for (const it of out.nftables) {
    if (!it.rule?.comment) continue;
    r[it.rule.comment] = it.rule.expr.reduce((n, e) => n + (e.counter?.packets ?? 0), 0);
  }
  return r;
}

/** `QNET key value` from a guest's console, first field only. */
export function addrOf(g: RunGuest, key: string): string { return g.results().get(key)?.[0] ?? ''; }

/** Extract the last `Address: A` of nslookup output (the guest prints it after a key). */
export const NSLOOKUP_ADDR = `sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1`;
