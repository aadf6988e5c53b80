// `qnet up [-c FILE]`: the daemon. Runs every configured network (with no config, one NAT
// network named `default`), serves the control API, reloads on SIGHUP, stops on SIGTERM.
import { parseArgs } from 'node:util';
import path from 'node:path';
import { loadConfig, ConfigError } from '../config/config.ts';
import { Daemon } from '../daemon/daemon.ts';
import { startApi } from '../daemon/api.ts';
import { logger, setLogLevel, setLogJson } from '../util/log.ts';
import { stopSignal } from '../util/signals.ts';
import { Host } from '../host/pci/sysfs.ts';

const log = logger('up');

const USAGE = `usage: qnet up [-c FILE] [--runtime-dir DIR] [--state-dir DIR] [--sysfs DIR] [--verbose] [--log-json]

Runs qnet's networks from FILE (qnet.yaml; default: $QNET_CONFIG, else the embedded
default: one NAT network 'default', 192.168.122.0/24) and the control API on a unix socket
in the runtime directory. SIGHUP reloads FILE, restarting only networks that changed;
SIGTERM or Ctrl-C stops cleanly. State (leases, forwards, MACs) survives restarts.
Kernel networks (bridge:) need root; stopping removes what qnet made for them (bridge,
nftables table, uplink move, forwarding), except for a network whose bridge still carries
VMs: that one stays up for them (the kernel moves their packets) until the next qnet up
adopts it. --sysfs DIR (and --procfs, --devfs) point hostdev networks at another sysfs
tree (tests).`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      'runtime-dir': { type: 'string' },
      'state-dir': { type: 'string' },
      sysfs: { type: 'string' },
      procfs: { type: 'string' },
      devfs: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
      'log-json': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
  if (values.verbose) setLogLevel('debug');
  if (values['log-json']) setLogJson(true);
  const file = values.config ?? process.env.QNET_CONFIG ?? null;
  const dirs = { runtimeDir: values['runtime-dir'], stateDir: values['state-dir'] };
  let config;
  try {
    config = loadConfig(file ? path.resolve(file) : null, dirs);
  } catch (e) {
    process.stderr.write(`qnet up: ${(e as Error).message}\n`);
    return 2;
  }
  for (const w of config.warnings) log.warn(w);
  let daemon: Daemon;
  try {
    const { sysfs, procfs, devfs } = values;
    daemon = await Daemon.start(config, sysfs || procfs || devfs ? { host: () => new Host({ sysfs, procfs, devfs }) } : {});
  } catch (e) {
    process.stderr.write(`qnet up: ${(e as Error).message}\n`);
    return 1;
  }
  const socketPath = path.join(config.runtimeDir, 'api.sock');
  let api;
  try {
    api = await startApi(daemon, { socketPath, tcp: config.api.tcp, shared: daemon.sharedApi });
  } catch (e) {
    await daemon.stop();
    process.stderr.write(`qnet up: ${(e as Error).message}\n`);
    return 1;
  }
  daemon.apiSocket = api.socketPath;
  let reloading = Promise.resolve();
  const reload = async (): Promise<void> => {
    try {
      const next = loadConfig(config.path, dirs);
      for (const w of next.warnings) log.warn(w);
      await daemon.reload(next);
    } catch (e) {
      log.error('reload failed; keeping the running configuration', { error: e instanceof ConfigError ? e.message : (e as Error).message });
    }
  };
  const stopped = stopSignal();
  process.on('SIGHUP', () => { reloading = reloading.then(() => reload()); });
  process.stdout.write(`qnet up: control API on ${api.socketPath}${api.tcpPort ? ` and 127.0.0.1:${api.tcpPort} (token)` : ''}\n${daemon.banner()}\n`);

  await stopped;
  await reloading;
  await api.close();
  await daemon.stop();
  log.info('stopped');
  return 0;
}
