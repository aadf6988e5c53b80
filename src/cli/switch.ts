// `qnet switch`: a bare L2 switch (an isolated segment: guests reach each other, nothing else).
import { parseArgs } from 'node:util';
import { Switch } from '../switch/switch.ts';
import { qemuNetdevFor } from '../link/endpoint.ts';
import { connectAttachPoint, listenAttachPoint, parseAttach, type AttachSpec, type OpenAttachPoint } from '../network/attach.ts';
import type { Port } from '../link/port.ts';
import { logger, setLogLevel } from '../util/log.ts';
import { stopSignal } from '../util/signals.ts';

const log = logger('switch');

const USAGE = `usage: qnet switch --listen ADDR[,OPTS] [--listen ...] [--connect ADDR[,OPTS]] [--pcap FILE]

Runs a learning Ethernet switch that QEMU guests join over socket netdevs.
ADDR: unix:PATH | tcp:HOST:PORT | udp:HOST:PORT[@QEMU_HOST:QEMU_PORT] | unixgram:PATH[@QEMU_PATH] | mcast:GROUP:PORT[@LOCALADDR]
OPTS (for every port on that address): isolated, antispoof[=MAC;MAC], vlan=N, trunk=N;N, native=N, mtu=N
  --connect ADDR  connect to a QEMU stream server (-netdev stream,server=on), reconnecting when it restarts
  --pcap FILE     record every frame entering the switch (Wireshark format)
  --mtu N         largest payload any port may send (default: no limit beyond QEMU's 69632-byte frames)
  --aging SECS    MAC aging time (default 300)
  --verbose       debug logging
SIGUSR1 prints port and switch counters as one JSON line on stdout.`;

export interface RunningSwitch {
  sw: Switch;
  close(): void;
  stats(): unknown;
}

/** Bring up a switch with its attach points (used by the CLI and by tests). */
export async function startSwitch(opts: { listen: AttachSpec[]; connect?: AttachSpec[]; pcap?: string; mtu?: number; agingMs?: number }): Promise<RunningSwitch> {
  const sw = new Switch({ mtu: opts.mtu, agingMs: opts.agingMs });
  const points: OpenAttachPoint[] = [];
  const attach = (spec: AttachSpec) => (p: Port) => {
    sw.attach(p, spec.port);
    log.info('port attached', { port: p.name, on: spec.text });
  };
  try {
    for (const spec of opts.listen) points.push(await listenAttachPoint(spec, attach(spec)));
    for (const spec of opts.connect ?? []) points.push(connectAttachPoint(spec, attach(spec)));
  } catch (e) {
    for (const p of points) p.close();
    sw.close();
    throw e;
  }
  if (opts.pcap) sw.startCapture(opts.pcap);
  return {
    sw,
    close() { for (const p of points) p.close(); sw.close(); },
    stats() {
      return {
        switch: sw.stats,
        endpoints: points.map((p) => p.stats()),
        ports: [...sw.ports.values()].map((sp) => ({
          id: sp.port.id, name: sp.port.name, kind: sp.port.kind, peer: sp.port.peer,
          isolated: sp.isolated, macs: sw.macsOn(sp.port), ...sp.port.counters, drops: sp.drops,
        })),
      };
    },
  };
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string', multiple: true },
      connect: { type: 'string', multiple: true },
      pcap: { type: 'string' },
      mtu: { type: 'string' },
      aging: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
  if (values.verbose) setLogLevel('debug');
  const listen = (values.listen ?? []).map(parseAttach);
  const connect = (values.connect ?? []).map(parseAttach);
  if (listen.length + connect.length === 0) {
    process.stderr.write(`qnet switch: give at least one --listen or --connect\n${USAGE}\n`);
    return 2;
  }
  const mtu = values.mtu ? Number(values.mtu) : undefined;
  if (mtu !== undefined && (!Number.isInteger(mtu) || mtu < 68)) throw new Error(`--mtu ${values.mtu}: want an integer >= 68`);
  const agingMs = values.aging ? Number(values.aging) * 1000 : undefined;
  const running = await startSwitch({ listen, connect, pcap: values.pcap, mtu, agingMs });
  process.on('SIGUSR1', () => process.stdout.write(JSON.stringify(running.stats()) + '\n'));
  const stopped = stopSignal();
  listen.forEach((spec, i) => {
    process.stdout.write(`qnet switch: listening on ${spec.text}\n  QEMU: -netdev ${qemuNetdevFor(spec.endpoint, `n${i}`)} -device virtio-net-pci,netdev=n${i},mac=52:54:00:XX:XX:XX\n`);
  });
  await stopped;
  process.stdout.write(JSON.stringify(running.stats()) + '\n');
  running.close();
  return 0;
}
