// `qnet bridge-helper --use-vnet --fd=N --br=BRIDGE`: QEMU's bridge-helper protocol (what
// `-netdev bridge,br=BRIDGE,helper=qnet-bridge-helper` runs), without setuid: the tap comes
// from the root qnet daemon over its API socket, which checks who is asking by the socket's
// peer credentials against the network's `allow:` list, and is passed on to QEMU over fd N
// the way the stock helper does (one 0 byte carrying it, SCM_RIGHTS).
//
// Arguments are taken as the stock helper takes them (--use-vnet, --br=, --fd=; anything else
// is a usage error). BRIDGE may be the network's bridge or the network's name. A refusal is
// one line on stderr and exit status 1, so QEMU fails with "bridge helper failed".
import fs from 'node:fs';
import type { TapResult } from '../daemon/types.ts';
import { resolveApiAddress } from '../daemon/client.ts';
import { closeFd, fdRequest } from '../host/fdpass.ts';
import { hostNative } from '../host/native.ts';
import { parentQemu } from './qemu-parent.ts';

const USAGE = 'Usage: qnet bridge-helper [--use-vnet] --br=bridge --fd=unixfd';

function die(msg: string): number {
  process.stderr.write(`qnet-bridge-helper: ${msg.replace(/\s*\n\s*/g, '; ')}\n`);
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  let useVnet = false;
  let bridge: string | undefined;
  let fd = -1;
  let api: string | undefined;
  for (const a of argv) {
    if (a === '--use-vnet') useVnet = true;
    else if (a.startsWith('--br=')) bridge = a.slice(5);
    else if (a.startsWith('--fd=')) fd = Number.parseInt(a.slice(5), 10);
    else if (a.startsWith('--api=')) api = a.slice(6);
    else if (a === '--help' || a === '-h') { process.stdout.write(`${USAGE}\n`); return 0; }
    else { process.stderr.write(`${USAGE}\n`); return 1; }
  }
  if (bridge === undefined || !Number.isInteger(fd) || fd < 0) { process.stderr.write(`${USAGE}\n`); return 1; }
  if (Buffer.byteLength(bridge) >= 16) return die(`name \`${bridge}' too long: ${Buffer.byteLength(bridge)}`);
  try {
    if (!fs.fstatSync(fd).isSocket()) return die(`--fd=${fd} is not a socket (QEMU passes one end of a socket pair)`);
  } catch {
    return die(`--fd=${fd} is not an open descriptor`);
  }
  const qemu = parentQemu();
  const vm = qemu.name ?? `qemu-${qemu.pid}`;
  const sock = resolveApiAddress(api);
  let res;
  try {
    res = fdRequest<TapResult & { error?: string }>(sock, 'POST', '/v1/taps', { bridge, vm, vnetHdr: useVnet }, 20_000);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return die(`no qnet daemon at ${sock} (start it as root with qnet up, or point QNET_API at its socket)`);
    if (code === 'EACCES' || code === 'EPERM') return die(`no permission on ${sock}: the daemon shares its socket only when a network has an allow: list`);
    return die(`cannot reach the qnet daemon at ${sock}: ${(e as Error).message}`);
  }
  if (res.status !== 201 || res.fds.length === 0) {
    for (const f of res.fds) closeFd(f);
    const why = typeof res.body === 'object' && res.body && 'error' in res.body ? String(res.body.error) : `the daemon answered ${res.status}`;
    return die(why);
  }
  const [tap, ...extra] = res.fds;
  for (const f of extra) closeFd(f);
  const e = hostNative().sendFds(fd, Buffer.from([0]), [tap], 5000);
  closeFd(tap);
  if (e !== 0) return die(`failed to write fd to unix socket: errno ${e}`);
  return 0;
}
