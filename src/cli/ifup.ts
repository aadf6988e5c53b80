// `qnet ifup [--net NET] TAP` / `qnet ifdown [--net NET] TAP`: QEMU's script= and downscript=
// (QEMU runs them with the tap's name only; `--net` or $QNET_NET picks the network, else the
// daemon's only kernel network, or the one named default). ifup asks the daemon to set the
// tap's MTU to the network's, enslave it to the bridge and bring it up, and records it so the
// VM (QEMU's -name) shows in `qnet status` and `qnet net show` with the MAC the bridge learns;
// ifdown takes it off the bridge again (QEMU then deletes the tap itself).
import { seg } from '../daemon/client.ts';
import { client, parse, runCommand, UsageError } from './common.ts';
import { parentQemu } from './qemu-parent.ts';

const usage = (cmd: string) => `usage: qnet ${cmd} [--net NET] [--api PATH] TAP

${cmd === 'ifup' ? 'Puts tap TAP on a kernel network\'s bridge (MTU, master, up) and registers it' : 'Takes tap TAP off its kernel network\'s bridge'}; made for QEMU's
-netdev tap,script=qnet-ifup,downscript=qnet-ifdown (QEMU passes only the tap's name).
  --net NET    the network (default: $QNET_NET, else the daemon's only kernel network or 'default')
  --api PATH   the daemon's API socket (default: $QNET_API or the runtime directory)`;

export function makeMain(cmd: 'ifup' | 'ifdown') {
  return async (argv: string[]): Promise<number> => runCommand(cmd, usage(cmd), async () => {
    const { values, positionals } = parse(argv, { net: { type: 'string' } });
    if (values.help) { process.stdout.write(usage(cmd) + '\n'); return 0; }
    if (positionals.length !== 1) throw new UsageError(`give the tap's name: qnet ${cmd} TAP`);
    const ifname = positionals[0];
    const network = values.net ?? process.env.QNET_NET ?? undefined;
    const api = client(values.api);
    if (cmd === 'ifup') {
      const r = await api.post<{ network: string; bridge: string }>('/v1/ports', { ifname, ...(network ? { network } : {}), vm: parentQemu().name });
      process.stderr.write(`qnet ifup: ${ifname} is on network ${r.network} (bridge ${r.bridge})\n`);
    } else {
      const r = await api.del<{ network: string; removed: boolean }>(`/v1/ports/${seg(ifname)}${network ? `?network=${encodeURIComponent(network)}` : ''}`);
      process.stderr.write(`qnet ifdown: ${ifname} ${r.removed ? 'is off' : 'was not on'} network ${r.network}\n`);
    }
    return 0;
  });
}

export const ifup = makeMain('ifup');
export const ifdown = makeMain('ifdown');
