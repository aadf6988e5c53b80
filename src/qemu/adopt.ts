// Rewrites a command line so its user-mode and socket networks are served by
// qnet: each becomes a -netdev stream client of a qnet process on a UNIX socket.
// Tap and bridge netdevs move onto a qnet kernel network instead (a root qnet daemon with a
// `bridge:` network): -netdev tap gets qnet's ifup/ifdown scripts, -netdev bridge qnet's
// bridge helper (no setuid: the daemon makes the tap), both otherwise unchanged.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { analyze } from './analyze.ts';
import type { Analysis, AnalyzeOptions, Diagnostic } from './analysis.ts';
import { shellJoin } from './args.ts';
import { assemble, blockingErrors, deviceArg, netdevArg, toModern, type NetdevOut } from './convert.ts';
import { formatQemuOpts } from './opts.ts';

export interface AdoptedService {
  /** 'user' for qnet user, 'switch' for qnet switch. */
  kind: 'user' | 'switch';
  /** The netdev(s) it replaces. */
  netdevs: string[];
  socket: string;
  argv: string[];
  command: string;
}

export interface AdoptOutput {
  ok: boolean;
  services: AdoptedService[];
  args?: string[];
  notes: string[];
  diagnostics: Diagnostic[];
}

export interface AdoptOptions extends AnalyzeOptions {
  /** Directory for the sockets (default ${XDG_RUNTIME_DIR:-/tmp}/qnet). */
  socketDir?: string;
  /** Program name to print (default 'qnet'). */
  qnet?: string;
  /** The qnet kernel network that taps and bridges move to (default: the bridge's own name / the daemon's only one). */
  network?: string;
  /** Where qnet-ifup, qnet-ifdown and qnet-bridge-helper are (default: this installation's bin/). */
  binDir?: string;
}

/** bin/ of this qnet installation. */
export const BIN_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin');

export function defaultSocketDir(env: NodeJS.ProcessEnv = process.env): string {
  return `${env.XDG_RUNTIME_DIR || '/tmp'}/qnet`;
}

function streamClient(id: string, path: string): NetdevOut {
  return { type: 'stream', id, entries: [['server', 'off'], ['addr.type', 'unix'], ['addr.path', path]] };
}

/** Name of the shared segment a socket netdev belongs to, so peers that adopt separately meet on one switch. */
function segmentName(nd: NetdevOut): string | undefined {
  const e = new Map(nd.entries);
  const clean = (s: string) => s.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^-|-$/g, '');
  if (e.has('mcast')) return `mcast-${clean(e.get('mcast')!)}`;
  for (const k of ['listen', 'connect']) if (e.has(k)) return `tcp-${clean(e.get(k)!.slice(e.get(k)!.lastIndexOf(':') + 1))}`;
  if (e.has('udp')) return `udp-${clean(e.get('udp')!)}`;
  return undefined;
}

export function adoptAnalysis(a: Analysis, opts: AdoptOptions = {}): AdoptOutput {
  const blocking = blockingErrors(a);
  if (blocking.length) return { ok: false, services: [], notes: [], diagnostics: a.diagnostics };
  const dir = opts.socketDir ?? defaultSocketDir();
  const qnet = opts.qnet ?? 'qnet';
  const m = toModern(a);
  // The default network is implicit; make it explicit so there is something to adopt.
  if (a.defaultNet) {
    m.netdevs.push({ type: 'user', id: 'net0', entries: [] });
    m.devices.push({ model: a.machine.defaultNic, netdev: 'net0', entries: [] });
    m.notes.push(`made QEMU's default network explicit (-nic user,model=${a.machine.defaultNic}) to adopt it`);
  }
  const services: AdoptedService[] = [];
  const switches = new Map<string, AdoptedService>();
  const bin = opts.binDir ?? BIN_DIR;
  let kernel = 0;
  m.netdevs = m.netdevs.map((nd) => {
    if (nd.type === 'tap' || nd.type === 'bridge') {
      const keys = new Set(nd.entries.map(([k]) => k));
      if (keys.has('fd') || keys.has('fds')) { m.notes.push(`left tap netdev ${nd.id} alone: its fd= comes from the caller`); return nd; }
      kernel++;
      if (nd.type === 'bridge' || keys.has('helper')) {
        const br = nd.entries.find(([k]) => k === 'br')?.[1] ?? 'br0';
        const target = opts.network ?? br;
        const entries: Array<[string, string]> = [['br', target], ...nd.entries.filter(([k]) => k !== 'helper' && k !== 'br'), ['helper', path.join(bin, 'qnet-bridge-helper')]];
        m.notes.push(`${nd.type} netdev ${nd.id} now gets its tap from the qnet daemon through qnet-bridge-helper (no setuid): the daemon needs a kernel network ${opts.network ? `'${opts.network}'` : `on bridge ${br}`} (e.g. { name: ..., mode: nat, bridge: ${br} }, or mode: bridge for a LAN bridge) whose allow: lists the user QEMU runs as`);
        return { type: nd.type, id: nd.id, entries };
      }
      const entries = nd.entries.filter(([k]) => k !== 'script' && k !== 'downscript');
      entries.push(['script', path.join(bin, 'qnet-ifup')], ['downscript', path.join(bin, 'qnet-ifdown')]);
      m.notes.push(`tap netdev ${nd.id} now joins a qnet kernel network through qnet-ifup/qnet-ifdown (QEMU as root, as before)${opts.network ? `; run QEMU with QNET_NET=${opts.network} in its environment (QEMU gives the scripts only the tap's name)` : ': the daemon\'s only kernel network, or set QNET_NET=NETWORK for QEMU'}`);
      return { type: 'tap', id: nd.id, entries };
    }
    if (nd.type === 'user') {
      // qnet serves neither SMB (QEMU runs the host's smbd) nor IPv6-only networks: keep those on QEMU's slirp.
      const keys = new Set(nd.entries.map(([k]) => k));
      if (keys.has('smb') || nd.entries.some(([k, v]) => k === 'ipv4' && v === 'off')) {
        m.notes.push(`left user netdev ${nd.id} on QEMU's own slirp: qnet does not serve ${keys.has('smb') ? 'smb=' : 'ipv4=off'}`);
        return nd;
      }
      const path = `${dir}/${nd.id}.sock`;
      const optstr = formatQemuOpts(nd.entries);
      const argv = [qnet, 'user', optstr, '--listen', `unix:${path}`];
      services.push({ kind: 'user', netdevs: [nd.id], socket: path, argv, command: shellJoin(argv) });
      return streamClient(nd.id, path);
    }
    if (nd.type === 'socket') {
      const seg = segmentName(nd);
      if (!seg) { m.notes.push(`left socket netdev ${nd.id} alone: fd= sockets come from the caller`); return nd; }
      const path = `${dir}/${seg}.sock`;
      let svc = switches.get(seg);
      if (!svc) {
        const argv = [qnet, 'switch', '--listen', `unix:${path}`];
        svc = { kind: 'switch', netdevs: [], socket: path, argv, command: shellJoin(argv) };
        switches.set(seg, svc);
        services.push(svc);
      }
      svc.netdevs.push(nd.id);
      m.notes.push(`socket netdev ${nd.id} now reaches segment ${seg} through qnet switch; other VMs on the same ${seg.split('-')[0]} link should be adopted too (they land on the same switch socket)`);
      return streamClient(nd.id, path);
    }
    return nd;
  });
  if (!services.length && !kernel) m.notes.push('nothing to adopt: no user-mode, socket, tap or bridge networks');
  const block: string[] = [];
  const emitted = new Set<string>();
  const emit = (id?: string) => {
    const nd = m.netdevs.find((n) => n.id === id);
    if (!nd || emitted.has(nd.id)) return;
    if (nd.link) emit(nd.link);
    emitted.add(nd.id);
    block.push('-netdev', netdevArg(nd));
  };
  for (const d of m.devices) {
    const nd = m.netdevs.find((n) => n.id === d.netdev);
    if (nd?.type === 'hubport') {
      const hubid = nd.entries.find(([k]) => k === 'hubid')?.[1];
      for (const p of m.netdevs) if (p.type === 'hubport' && p.link && p.entries.find(([k]) => k === 'hubid')?.[1] === hubid) emit(p.id);
    }
    emit(d.netdev);
    block.push('-device', deviceArg(d));
  }
  for (const n of m.netdevs) emit(n.id);
  const insertAt = m.insertAt < 0 ? Number.MAX_SAFE_INTEGER : m.insertAt;
  return { ok: true, services, args: assemble(a, block, insertAt), notes: m.notes, diagnostics: a.diagnostics };
}

export function adopt(argv: string[], opts: AdoptOptions = {}): AdoptOutput {
  return adoptAnalysis(analyze(argv, opts), opts);
}
