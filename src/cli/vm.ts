// `qnet vm ls`: the VMs started with `qnet run`, as the daemon knows them and as QEMU reports
// them over QMP (run state, and per NIC its MAC and RX filter). `qnet vm link NAME up|down`
// sets the qnet NIC's link (QMP set_link).
import type { NetworkInfo, VmRecord } from '../daemon/types.ts';
import { QmpClient, type RxFilterInfo } from '../qemu/qmp.ts';
import { client, duration, json, parse, runCommand, table, UsageError } from './common.ts';

const USAGE = `usage: qnet vm ls [--json]
       qnet vm link NAME up|down

  ls     list VMs started by \`qnet run\`: pid, QEMU run state, uptime, and for each NIC its MAC,
         model, promiscuous mode and whether the daemon's port to it is connected
  link   set the link of the VM's qnet NIC up or down (as if the cable were unplugged)
  --json      print the result as JSON
  --api PATH  the daemon's API socket (default: $QNET_API or the runtime directory)`;

export interface NicState {
  name: string;
  mac: string;
  promiscuous: boolean;
  unicast: string;
  multicast: string;
  broadcastAllowed: boolean;
  /** this is the NIC qnet added (its MAC is the VM's) */
  qnet: boolean;
}

export interface VmState extends VmRecord {
  /** QEMU's run state (running, paused, prelaunch, ...) or 'unreachable' */
  state: string;
  qemuName?: string;
  nics: NicState[];
  /** the daemon has a connected port for this VM */
  connected: boolean;
  error?: string;
}

export function nicState(f: RxFilterInfo, vmMac: string): NicState {
  return {
    name: f.name,
    mac: f['main-mac'],
    promiscuous: f.promiscuous,
    unicast: f.unicast,
    multicast: f.multicast,
    broadcastAllowed: f['broadcast-allowed'],
    qnet: f['main-mac'].toLowerCase() === vmMac.toLowerCase(),
  };
}

export async function inspectVm(vm: VmRecord, connected: boolean, timeoutMs = 2000): Promise<VmState> {
  const out: VmState = { ...vm, state: 'unreachable', nics: [], connected };
  let q: QmpClient | undefined;
  try {
    q = await QmpClient.connect(vm.qmp, { timeoutMs });
    out.state = (await q.queryStatus()).status;
    out.qemuName = await q.queryName();
    out.nics = (await q.queryRxFilter()).map((f) => nicState(f, vm.mac));
  } catch (e) {
    out.error = (e as Error).message;
  } finally {
    q?.close();
  }
  return out;
}

async function vmStates(api: ReturnType<typeof client>): Promise<VmState[]> {
  const [vms, nets] = await Promise.all([api.get<VmRecord[]>('/v1/vms'), api.get<NetworkInfo[]>('/v1/networks')]);
  const connected = new Set<string>();
  for (const n of nets) for (const p of n.ports) if (p.vm) connected.add(`${n.name}/${p.vm}`);
  return Promise.all(vms.map((v) => inspectVm(v, connected.has(`${v.network}/${v.name}`))));
}

export function formatVms(vms: VmState[], now = Date.now()): string {
  if (vms.length === 0) return 'no VMs (start one with `qnet run NET -- qemu-system-x86_64 ...`)\n';
  const rows: (string | number)[][] = [];
  for (const v of [...vms].sort((a, b) => a.name.localeCompare(b.name))) {
    const base = [v.name, v.network, v.pid, v.state, duration((now - v.startedAt) / 1000)];
    if (v.hostdev) { // a VF pool's VM: its NIC is the VF, no qnet port
      rows.push([...base, `VF ${v.hostdev}`, v.mac, v.model, '-', '(VF: no port)']);
      continue;
    }
    if (v.nics.length === 0) {
      rows.push([...base, '-', v.mac, v.model, '-', v.connected ? 'connected' : 'not connected']);
      continue;
    }
    for (const n of v.nics) {
      rows.push([...base, n.name, n.mac, n.qnet ? v.model : '-', n.promiscuous ? 'yes' : 'no',
        n.qnet ? (v.connected ? 'connected' : 'not connected') : '(not qnet)']);
    }
  }
  let out = table(['NAME', 'NETWORK', 'PID', 'STATE', 'UP', 'NIC', 'MAC', 'MODEL', 'PROMISC', 'QNET PORT'], rows);
  for (const v of vms) if (v.error) out += `${v.name}: QMP: ${v.error}\n`;
  return out;
}

export async function main(argv: string[]): Promise<number> {
  return runCommand('vm', USAGE, async () => {
    const { values, positionals } = parse(argv, {});
    if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
    const [sub, ...rest] = positionals;
    const api = client(values.api);
    if (sub === 'ls' || sub === 'list' || sub === undefined) {
      if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
      const vms = await vmStates(api);
      process.stdout.write(values.json ? json(vms) : formatVms(vms));
      return 0;
    }
    if (sub === 'link') {
      if (rest.length !== 2 || (rest[1] !== 'up' && rest[1] !== 'down')) throw new UsageError('expected: qnet vm link NAME up|down');
      const vm = (await api.get<VmRecord[]>('/v1/vms')).find((v) => v.name === rest[0]);
      if (!vm) throw new Error(`no VM '${rest[0]}' (see qnet vm ls)`);
      const q = await QmpClient.connect(vm.qmp);
      try {
        await q.setLink('qnet0', rest[1] === 'up');
      } finally {
        q.close();
      }
      if (values.json) process.stdout.write(json({ name: vm.name, link: rest[1] }));
      else process.stdout.write(`${vm.name}: link ${rest[1]}\n`);
      return 0;
    }
    throw new UsageError(`unknown subcommand '${sub}' (expected ls or link)`);
  });
}

