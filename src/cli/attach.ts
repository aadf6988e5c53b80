// `qnet attach NET [--name VM] [--model M]`: the QEMU arguments that put a NIC on a network,
// with a MAC the daemon keeps stable for this VM name.
import crypto from 'node:crypto';
import type { AttachResult } from '../daemon/types.ts';
import { seg } from '../daemon/client.ts';
import { shellJoin } from '../qemu/args.ts';
import { client, json, parse, runCommand, UsageError } from './common.ts';

const USAGE = `usage: qnet attach NET [--name VM] [--model M] [--mac MAC] [--shell | --json]

Prints the QEMU arguments that attach a VM to network NET, one per line, e.g.
  qemu-system-x86_64 ... $(qnet attach default --name vm1 --shell)
  --name VM    the VM's name: the same name gets the same MAC (default: a new random name)
  --model M    the NIC model (default: the daemon's, virtio-net-pci)
  --mac MAC    use this MAC (qnet keeps it for the name from then on)
  --shell      print the arguments as one shell-quoted line
  --json       print the daemon's answer (network, name, mac, model, args) as JSON
  --api PATH   the daemon's API socket (default: $QNET_API or the runtime directory)`;

export function randomVmName(): string {
  return `vm-${crypto.randomBytes(3).toString('hex')}`;
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('attach', USAGE, async () => {
    const { values, positionals } = parse(argv, {
      name: { type: 'string' },
      model: { type: 'string' },
      mac: { type: 'string' },
      shell: { type: 'boolean' },
    });
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    if (positionals.length !== 1) throw new UsageError('give exactly one network: qnet attach NET');
    const name = values.name ?? randomVmName();
    const body: Record<string, string> = { name };
    if (values.model) body.model = values.model;
    if (values.mac) body.mac = values.mac;
    const r = await client(values.api).post<AttachResult>(`/v1/networks/${seg(positionals[0])}/attach`, body);
    if (values.json) process.stdout.write(json(r));
    else if (values.shell) process.stdout.write(shellJoin(r.args) + '\n');
    else process.stdout.write(r.args.join('\n') + '\n');
    if (!values.name && !values.json) process.stderr.write(`qnet attach: VM name ${r.name}, MAC ${r.mac} (pass --name to keep the MAC stable)\n`);
    return 0;
  });
}
