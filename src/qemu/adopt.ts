// Rewrites a command line so its user-mode and socket networks are served by
// qnet: each becomes a -netdev stream client of a qnet process on a UNIX socket.
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
}

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
  m.netdevs = m.netdevs.map((nd) => {
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
  if (!services.length) m.notes.push('nothing to adopt: no user-mode or socket networks');
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
