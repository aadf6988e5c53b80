// Endpoint syntax shared by the CLI and config: the transport where QEMU meets qnet.
//   unix:PATH                 stream socket (QEMU -netdev stream / socket,connect=)
//   tcp:HOST:PORT             stream socket over TCP
//   udp:HOST:PORT[@RHOST:RPORT]   dgram endpoint; @ names a QEMU peer to send to up front
//   mcast:GROUP:PORT[@LOCALADDR]  a multicast segment (QEMU -netdev socket,mcast=)
//   unixgram:PATH[@QEMU_PATH]     unix datagram endpoint (QEMU -netdev dgram with unix addresses)
// The switch-port flags that may follow an endpoint are parsed by network/attach.ts.
import type { StreamAddress } from './stream.ts';
import type { UdpAddr } from './dgram.ts';

export type Endpoint =
  | { kind: 'stream'; addr: StreamAddress }
  | { kind: 'udp'; local: UdpAddr; peer?: UdpAddr }
  | { kind: 'mcast'; group: UdpAddr; localAddr?: string }
  | { kind: 'unixgram'; path: string; peer?: string };

function hostPort(s: string, what: string): UdpAddr {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(s);
  if (!m) throw new Error(`${what} '${s}' is not HOST:PORT`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`${what} '${s}': port ${port} is out of range 0-65535`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export function parseEndpoint(text: string): Endpoint {
  const colon = text.indexOf(':');
  const scheme = colon < 0 ? '' : text.slice(0, colon);
  const rest = text.slice(colon + 1);
  switch (scheme) {
    case 'unix':
      if (!rest) throw new Error(`'${text}': unix: needs a socket path`);
      return { kind: 'stream', addr: { kind: 'unix', path: rest } };
    case 'tcp': {
      const a = hostPort(rest, 'tcp address');
      return { kind: 'stream', addr: { kind: 'tcp', host: a.host, port: a.port } };
    }
    case 'udp': {
      const [l, r] = rest.split('@');
      return { kind: 'udp', local: hostPort(l, 'udp address'), peer: r ? hostPort(r, 'udp peer') : undefined };
    }
    case 'mcast': {
      const [g, local] = rest.split('@');
      const group = hostPort(g, 'multicast group');
      const first = Number(group.host.split('.')[0]);
      if (!(first >= 224 && first <= 239)) throw new Error(`'${group.host}' is not an IPv4 multicast address (224.0.0.0/4)`);
      return { kind: 'mcast', group, localAddr: local || undefined };
    }
    case 'unixgram': {
      const [p, peer] = rest.split('@');
      if (!p) throw new Error(`'${text}': unixgram: needs a socket path`);
      return { kind: 'unixgram', path: p, peer: peer || undefined };
    }
    default:
      throw new Error(`'${text}': unknown address type '${scheme}'; use unix:PATH, tcp:HOST:PORT, udp:HOST:PORT[@PEER], unixgram:PATH[@PEER] or mcast:GROUP:PORT`);
  }
}

/** The QEMU arguments that attach a NIC to an endpoint qnet listens on. */
export function qemuNetdevFor(ep: Endpoint, id: string, qemuLocal?: UdpAddr): string {
  switch (ep.kind) {
    case 'stream':
      return ep.addr.kind === 'unix'
        ? `stream,id=${id},server=off,addr.type=unix,addr.path=${ep.addr.path.replace(/,/g, ',,')}`
        : `stream,id=${id},server=off,addr.type=inet,addr.host=${ep.addr.host},addr.port=${ep.addr.port}`;
    case 'udp': {
      const l = qemuLocal ?? ep.peer ?? { host: ep.local.host, port: 0 };
      return `dgram,id=${id},local.type=inet,local.host=${l.host},local.port=${l.port || 'PORT'},remote.type=inet,remote.host=${ep.local.host},remote.port=${ep.local.port}`;
    }
    case 'unixgram':
      return `dgram,id=${id},local.type=unix,local.path=${(ep.peer ?? `${ep.path}.${id}`).replace(/,/g, ',,')},remote.type=unix,remote.path=${ep.path.replace(/,/g, ',,')}`;
    case 'mcast':
      return `socket,id=${id},mcast=${ep.group.host}:${ep.group.port}${ep.localAddr ? `,localaddr=${ep.localAddr}` : ''}`;
  }
}
