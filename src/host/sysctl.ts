// Namespace sysctls a kernel network depends on: IPv4 forwarding for nat, routed and open
// networks. qnet records the value it found before changing it, and puts it back when the
// last network that needed the change stops, unless somebody changed it meanwhile (then the
// current value is theirs and is left alone).
import { must, type Runner } from './run.ts';

export const IP_FORWARD = 'net.ipv4.ip_forward';

export async function getSysctl(r: Runner, key: string): Promise<string> {
  return (await must(r, ['sysctl', '-n', key])).trim();
}

export async function setSysctl(r: Runner, key: string, value: string): Promise<void> {
  await must(r, ['sysctl', '-q', '-w', `${key}=${value}`]);
}

/** A change qnet made, to undo later. */
export interface SysctlChange { key: string; before: string; after: string }

/** Set key to value if it is not already; returns the change made (or null). */
export async function ensureSysctl(r: Runner, key: string, value: string): Promise<SysctlChange | null> {
  const before = await getSysctl(r, key);
  if (before === value) return null;
  await setSysctl(r, key, value);
  return { key, before, after: value };
}

/** Undo a change if the value is still the one qnet set; returns whether it was restored. */
export async function restoreSysctl(r: Runner, c: SysctlChange): Promise<boolean> {
  const now = await getSysctl(r, c.key);
  if (now !== c.after) return false;
  await setSysctl(r, c.key, c.before);
  return true;
}
