// `qnet user [OPTIONS] [--listen ADDR]...`: one user-mode network, configured with QEMU's
// own `-netdev user` option string (plus qnet's dnsupstream=IP[:PORT], repeatable).
import { parseArgs } from 'node:util';
import path from 'node:path';
import fs from 'node:fs';
import { qemuNetdevFor } from '../link/endpoint.ts';
import { parseAttach, type AttachSpec } from '../network/attach.ts';
import { parseUserCliOptions } from '../qemu/user-network.ts';
import { userNetworkConfig } from '../config/config.ts';
import { Daemon } from '../daemon/daemon.ts';
import { startApi } from '../daemon/api.ts';
import { defaultRuntimeDir } from '../common/paths.ts';
import { setLogLevel } from '../util/log.ts';
import { stopSignal } from '../util/signals.ts';

const USAGE = `usage: qnet user [OPTIONS] [--listen ADDR]... [--connect ADDR]... [--pcap FILE] [--api PATH]

Runs a user-mode network (what QEMU's -netdev user gives a guest) in its own process.
OPTIONS is QEMU's -netdev user option string, e.g.
  'net=10.0.2.0/24,hostname=vm1,hostfwd=tcp:127.0.0.1:2222-:22'
plus qnet's own:
  dnsupstream=IP[:PORT]   DNS resolver to forward to (repeatable; default: /etc/resolv.conf)
  mtu=N                   link MTU offered by DHCP (default 1500)
ADDR: unix:PATH | tcp:HOST:PORT | udp:HOST:PORT[@PEER] | unixgram:PATH[@PEER] | mcast:GROUP:PORT
      (default: a new unix socket)
--api PATH  the control socket (default: RUNTIME_DIR/user-PID.api.sock); forwards can be
            changed while the guest runs: qnet forward add user tcp:8080 10.0.2.15:80 --api PATH
SIGUSR1 prints the network's counters, leases and forwards as one JSON line on stdout.`;

export function defaultSocketPath(name = 'user'): string {
  const dir = defaultRuntimeDir();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return path.join(dir, `${name}-${process.pid}.sock`);
}

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      listen: { type: 'string', multiple: true },
      connect: { type: 'string', multiple: true },
      pcap: { type: 'string' },
      api: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
  if (values.verbose) setLogLevel('debug');
  if (positionals.length > 1) throw new Error(`give the options as one string (got ${positionals.length} arguments); join them with commas`);
  const opts = parseUserCliOptions(positionals[0] ?? '');
  for (const w of opts.config.warnings) process.stderr.write(`qnet user: warning: ${w}\n`);
  let listen: AttachSpec[] = (values.listen ?? []).map(parseAttach);
  const connect = (values.connect ?? []).map(parseAttach);
  if (listen.length + connect.length === 0) listen = [parseAttach(`unix:${defaultSocketPath()}`)];
  // The network runs inside a daemon of its own (no config file, state in a scratch dir), so
  // the control API and the `qnet forward` commands work on it like on `qnet up`'s networks.
  const runtimeDir = defaultRuntimeDir();
  // (stateDir '': like slirp, a one-off user network keeps no state on disk)
  const daemon = await Daemon.start({
    path: null, stateDir: '', runtimeDir, api: {}, warnings: [],
    networks: [userNetworkConfig('user', opts, listen, { connect, pcap: values.pcap })],
  });
  const api = await startApi(daemon, { socketPath: values.api ?? path.join(runtimeDir, `user-${process.pid}.api.sock`), limits: daemon.limits });
  daemon.apiSocket = api.socketPath;
  const net = daemon.net('user');
  const c = opts.config;
  const stopped = stopSignal();
  process.on('SIGUSR1', () => process.stdout.write(JSON.stringify(net.stats()) + '\n'));
  process.stdout.write(`qnet user: network ${c.net}/${c.prefixLength}, gateway ${c.host}, DNS ${c.dns}, DHCP from ${c.dhcpstart}${c.restrict ? ', restricted' : ''}\n`);
  for (const r of net.hostfwd.rules) process.stdout.write(`  hostfwd ${r.proto} ${r.hostAddr || '*'}:${r.boundPort} -> guest ${r.guest || c.dhcpstart}:${r.guestPort}\n`);
  listen.forEach((spec, i) => {
    process.stdout.write(`  attach QEMU with: -netdev ${qemuNetdevFor(spec.endpoint, `n${i}`)} -device virtio-net-pci,netdev=n${i}\n`);
  });
  process.stdout.write(`  control: qnet forward ls|add|rm user ... --api ${api.socketPath}\n`);
  await stopped;
  await api.close();
  daemon.stop();
  return 0;
}
