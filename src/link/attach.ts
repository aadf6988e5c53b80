// Opening attach points: the one place that turns an AttachSpec (where QEMU meets qnet)
// into live transports, for the bare switch and for every network.
import type { AttachSpec } from './address.ts';
import type { Port } from './port.ts';
import { StreamConnector, StreamListener } from './stream.ts';
import { McastPort, UdpEndpoint } from './dgram.ts';
import { UnixDgramEndpoint } from './unixgram.ts';

export interface OpenAttachPoint {
  close(): void;
  /** transport-level drops that happen before a frame reaches any port */
  stats(): Record<string, unknown>;
}

/** Listen on (or join) an attach point; every QEMU that shows up is handed to onPort. */
export async function listenAttachPoint(spec: AttachSpec, onPort: (p: Port) => void): Promise<OpenAttachPoint> {
  const ep = spec.endpoint;
  switch (ep.kind) {
    case 'stream': {
      const l = await StreamListener.listen(ep.addr);
      l.onPort = onPort;
      return { close: () => l.close(), stats: () => ({ listen: spec.text, connections: l.ports.size }) };
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
