// Which VM is asking: helpers QEMU runs (bridge helper, ifup/ifdown scripts) know only their
// arguments, so they read their parent QEMU's command line from /proc for its -name (through
// a `sh -c` in between, as QEMU uses for a helper given with arguments).
import fs from 'node:fs';
import { qemuName } from './run.ts';

function cmdline(pid: number): string[] {
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a, i, all) => a !== '' || i < all.length - 1); } catch { return []; }
}

function parentOf(pid: number): number {
  try { return Number(/^PPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0); } catch { return 0; }
}

/** The QEMU that ran us: its pid and its -name (if any). */
export function parentQemu(): { pid: number; name?: string } {
  let pid = process.ppid;
  for (let hops = 0; hops < 3 && pid > 1; hops++) {
    const argv = cmdline(pid);
    if (argv.length && /qemu/.test(argv[0].split('/').pop() ?? '')) return { pid, name: qemuName(argv.slice(1)) };
    pid = parentOf(pid);
  }
  return { pid: process.ppid };
}
