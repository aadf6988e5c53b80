// A small in-memory DaemonControl for testing the API layer and the CLI (not the daemon).
import {
  BadRequestError, NotFoundError,
  type AttachResult, type DaemonControl, type ForwardInfo, type ForwardRequest, type LeaseInfo,
  type NetworkInfo, type StatusInfo, type VmRecord,
} from '../../src/daemon/types.ts';
import type { PcapWriter } from '../../src/switch/pcap.ts';

export class FakeControl implements DaemonControl {
  forwardsByNet = new Map<string, ForwardInfo[]>([['default', [
    { id: 'tcp:127.0.0.1:2222', proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 2222, guest: 'vm1', guestPort: 22, connections: 1, source: 'config' },
  ]], ['lab', []]]);
  vmList: VmRecord[] = [];
  captures: { network: string; port?: string; stopped: boolean; frames: number }[] = [];
  connected: string[] = [];
  disconnected: string[] = [];
  runtimeDir = '/run/qnet-test';

  status(): StatusInfo {
    return {
      version: '0.1.0', pid: process.pid, uptimeSec: 3725, configPath: '/etc/qnet.toml', stateDir: '/var/lib/qnet',
      runtimeDir: this.runtimeDir, apiSocket: '/run/qnet/api.sock',
      networks: this.networks().map((n) => ({ name: n.name, mode: n.mode, subnet: n.subnet, ports: n.ports.length, leases: n.leases.length, duplicateMacs: n.duplicateMacs })),
      warnings: ['network lab: no DNS upstream reachable'],
    };
  }
  private leaseList(net: string): LeaseInfo[] {
    return net === 'default'
      ? [{ mac: '52:54:00:00:00:01', ip: '10.0.2.15', hostname: 'vm1', expiresAt: Date.now() + 3600_000, static: false },
        { mac: '52:54:00:00:00:02', ip: '10.0.2.9', expiresAt: 0, static: true }]
      : [];
  }
  networks(): NetworkInfo[] {
    return ['default', 'lab'].map((name) => this.network(name));
  }
  network(name: string): NetworkInfo {
    if (name !== 'default' && name !== 'lab') throw new NotFoundError(`no network '${name}'`);
    const isDefault = name === 'default';
    return {
      name, mode: isDefault ? 'nat' : 'isolated', subnet: isDefault ? '10.0.2.0/24' : '192.168.77.0/24', gateway: isDefault ? '10.0.2.2' : '',
      mtu: 1500, attach: [`unix:/run/qnet/${name}.sock`],
      ports: isDefault ? [{
        id: 1, name: 'stream-1', kind: 'stream', peer: 'unix:/run/qnet/default.sock', macs: ['52:54:00:00:00:01'], addresses: ['10.0.2.15'],
        hostnames: ['vm1'], vm: 'vm1', rxFrames: 10, rxBytes: 1400, txFrames: 12, txBytes: 2000000, rxDropped: 0, txDropped: 1, drops: { queue: 1, 'source.offSubnet': 7 },
      }] : [],
      leases: this.leaseList(name),
      forwards: this.forwardsByNet.get(name) ?? [],
      duplicateMacs: [],
      counters: {},
    };
  }
  leases(network?: string): (LeaseInfo & { network: string })[] {
    const nets = network ? [this.network(network).name] : ['default', 'lab'];
    return nets.flatMap((n) => this.leaseList(n).map((l) => ({ ...l, network: n })));
  }
  forwards(network?: string): (ForwardInfo & { network: string })[] {
    const nets = network ? [this.network(network).name] : ['default', 'lab'];
    return nets.flatMap((n) => (this.forwardsByNet.get(n) ?? []).map((f) => ({ ...f, network: n })));
  }
  async addForward(network: string, spec: ForwardRequest): Promise<ForwardInfo> {
    this.network(network);
    if (spec.guest === 'boom') throw new Error('kaboom');
    const hostAddr = spec.hostAddr ?? '127.0.0.1';
    const id = `${spec.proto}:${hostAddr}:${spec.hostPort}`;
    const list = this.forwardsByNet.get(network)!;
    if (list.some((f) => f.id === id)) throw new BadRequestError(`forward ${id} exists`, 409);
    const f: ForwardInfo = { ...spec, hostAddr, id, connections: 0, source: 'runtime' };
    list.push(f);
    return f;
  }
  removeForward(network: string, id: string): ForwardInfo[] {
    this.network(network);
    const list = this.forwardsByNet.get(network)!;
    const gone = list.filter((f) => f.id === id || `${f.proto}:${f.hostPort}` === id);
    this.forwardsByNet.set(network, list.filter((f) => !gone.includes(f)));
    return gone;
  }
  /** Writes one 60-byte frame into `out` at once and then every 10 ms, until stopped. */
  startCapture(network: string, out: PcapWriter, port?: string): { stop(): void } {
    this.network(network);
    if (port === 'nope') throw new NotFoundError(`no port 'nope' on network '${network}'`);
    const c = { network, port, stopped: false, frames: 0 };
    this.captures.push(c);
    const frame = (): void => { out.write(Buffer.alloc(60, c.frames & 0xff)); c.frames++; };
    frame();
    const t = setInterval(frame, 10);
    const stop = (): void => { if (c.stopped) return; c.stopped = true; clearInterval(t); out.close(); };
    out.onClose(stop);
    return { stop };
  }
  metrics(): string {
    return '# HELP qnet_frames_total frames\n# TYPE qnet_frames_total counter\nqnet_frames_total{network="default"} 22\n';
  }
  attach(network: string, name: string, model?: string): AttachResult {
    this.network(network);
    const mac = '52:54:00:ab:cd:' + (name.length % 256).toString(16).padStart(2, '0');
    const m = model ?? 'virtio-net-pci';
    return { network, name, mac, model: m, args: ['-netdev', `stream,id=qnet-${network},addr.type=unix,addr.path=/run/qnet/${network}.sock`, '-device', `${m},netdev=qnet-${network},mac=${mac}`] };
  }
  connectVm(vm: VmRecord): void {
    this.network(vm.network);
    if (this.vmList.some((v) => v.name === vm.name)) throw new BadRequestError(`VM ${vm.name} is already registered`, 409);
    this.vmList.push(vm);
    this.connected.push(vm.name);
  }
  disconnectVm(name: string): void {
    if (!this.vmList.some((v) => v.name === name)) throw new NotFoundError(`no VM '${name}'`);
    this.vmList = this.vmList.filter((v) => v.name !== name);
    this.disconnected.push(name);
  }
  vms(): VmRecord[] {
    return this.vmList;
  }
}
