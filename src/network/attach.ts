// Attach points: where QEMU meets a network. The syntax is an endpoint (link/endpoint.ts)
// followed by optional switch-port flags:
//   ,isolated ,antispoof[=MAC[;MAC]] ,vlan=N ,trunk=N;N ,native=N ,mtu=N
// and one for the network above the switch: ,trusted (its guests' source addresses are not
// checked: a router guest, or a segment that carries many guests).
// and this is the one place that turns an AttachSpec into live transports, for the bare
// switch and for every network. It sits above both the transports and the switch, so it
// can know both.
import type { SwitchPortConfig } from '../switch/switch.ts';
import { parseEndpoint, type Endpoint } from '../link/endpoint.ts';
import type { Port } from '../link/port.ts';
import { StreamConnector, StreamListener } from '../link/stream.ts';
import { McastPort, UdpEndpoint } from '../link/dgram.ts';
import { UnixDgramEndpoint } from '../link/unixgram.ts';
import type { LimitReporter } from '../util/limits.ts';

export interface AttachSpec {
  endpoint: Endpoint;
  port: SwitchPortConfig;
  text: string;
  /** no source validation on its ports (network/source-guard.ts) */
  trusted?: boolean;
}

function vid(s: string, what: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n < 1 || n > 4094) throw new Error(`${what} '${s}' is not a VLAN id 1-4094`);
  return n;
}

/** Parse `ADDRESS[,flag[=value]]...`. */
export function parseAttach(text: string): AttachSpec {
  const parts = text.split(',');
  const endpoint = parseEndpoint(parts[0]);
  const port: SwitchPortConfig = {};
  let trunk: number[] | undefined;
  let native: number | undefined;
  let trusted: boolean | undefined;
  for (const p of parts.slice(1)) {
    const eq = p.indexOf('=');
    const key = eq < 0 ? p : p.slice(0, eq);
    const val = eq < 0 ? undefined : p.slice(eq + 1);
    switch (key) {
      case 'trusted': trusted = val === undefined || val === 'on' || val === 'yes'; break;
      case 'isolated': port.isolated = val === undefined || val === 'on' || val === 'yes'; break;
      case 'antispoof': port.antiSpoof = val ? val.split(';') : true; break;
      case 'vlan': port.vlan = { mode: 'access', vid: vid(val ?? '', 'vlan') }; break;
      case 'trunk': trunk = (val ?? '').split(';').filter(Boolean).map((v) => vid(v, 'trunk vlan')); break;
      case 'native': native = vid(val ?? '', 'native vlan'); break;
      case 'mtu': {
        const n = Number(val);
        if (!Number.isInteger(n) || n < 68 || n > 65535) throw new Error(`mtu '${val}' must be an integer 68-65535`);
        port.mtu = n;
        break;
      }
      default: throw new Error(`'${text}': unknown port option '${key}' (known: isolated, antispoof, vlan, trunk, native, mtu, trusted)`);
    }
  }
  if (trunk !== undefined || native !== undefined) {
    if (port.vlan) throw new Error(`'${text}': vlan= (access) and trunk=/native= exclude each other`);
    port.vlan = { mode: 'trunk', allowed: trunk && trunk.length ? trunk : undefined, native };
  }
  return trusted ? { endpoint, port, text, trusted } : { endpoint, port, text };
}

export interface OpenAttachPoint {
  close(): void;
  /** transport-level drops that happen before a frame reaches any port */
  stats(): Record<string, unknown>;
}

/** Listen on (or join) an attach point; every QEMU that shows up is handed to onPort. */
export async function listenAttachPoint(spec: AttachSpec, onPort: (p: Port) => void, opts: { limits?: LimitReporter } = {}): Promise<OpenAttachPoint> {
  const ep = spec.endpoint;
  switch (ep.kind) {
    case 'stream': {
      const l = await StreamListener.listen(ep.addr, 'stream', 0o660, { limits: opts.limits });
      l.onPort = onPort;
      return { close: () => l.close(), stats: () => ({ listen: spec.text, connections: l.ports.size, bufferedBytes: l.budget.bytes, ...l.stats }) };
    }
    case 'udp': {
      const e = await UdpEndpoint.bind(ep.local);
      e.onPort = onPort;
      if (ep.peer) e.addPeer(ep.peer);
      return { close: () => e.close(), stats: () => ({ listen: spec.text, badDatagrams: e.badDatagrams, refusedPeers: e.refusedPeers }) };
    }
    case 'unixgram': {
      const e = await UnixDgramEndpoint.bind(ep.path);
      e.onPort = onPort;
      if (ep.peer) e.addPeer(ep.peer);
      return { close: () => e.close(), stats: () => ({ listen: spec.text, badDatagrams: e.badDatagrams, refusedPeers: e.refusedPeers, unnamedDatagrams: e.unnamedDatagrams }) };
    }
    case 'mcast': {
      const m = await McastPort.join(ep.group, ep.localAddr);
      onPort(m);
      return { close: () => m.close(), stats: () => ({ listen: spec.text, echoesDropped: m.echoesDropped }) };
    }
  }
}

/** Connect to a QEMU that is the stream server, reconnecting whenever it restarts. */
export function connectAttachPoint(spec: AttachSpec, onPort: (p: Port) => void): OpenAttachPoint {
  if (spec.endpoint.kind !== 'stream') throw new Error(`connect ${spec.text}: only unix: and tcp: addresses can be connected to`);
  const c = new StreamConnector(spec.endpoint.addr);
  c.onPort = onPort;
  c.start();
  return { close: () => c.close(), stats: () => ({ connect: spec.text, connected: c.port !== null }) };
}
