// hostfwd: a host-side listener whose connections (TCP) or datagrams (UDP) are carried
// into a guest, appearing there to come from the gateway's host address, as with QEMU's
// `hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`. Rules can be added and
// removed while the network runs. Either side may be IPv6 (beyond QEMU, whose parser refuses
// it): the host side listens on the rule's address of either family, and the connection goes
// to the guest address of either family, from the gateway's host address of that family.
import net from 'node:net';
import dgram from 'node:dgram';
import type { UdpDatagram, UdpHost } from '../stack/output.ts';
import type { TcpStack } from '../stack/tcp/stack.ts';
import { Timer } from '../stack/timers.ts';
import { addrToString, parseAddr, refAddr } from '../stack/addr.ts';
import { hostAddrFor, type HostAddrs } from './host-target.ts';
import { logger } from '../util/log.ts';
import type { ForwardRule } from '../common/types.ts';

export type { ForwardRule };

const log = logger('hostfwd');

export interface ActiveHostFwd extends ForwardRule {
  /** the port actually bound (differs from hostPort when hostPort was 0) */
  boundPort: number;
  /** the guest address when the rule was added (names are resolved again per connection) */
  guestIp: number;
  connections: number;
  close(): void;
}

export function ruleText(r: ForwardRule): string {
  const br = (a: string): string => (a.includes(':') ? `[${a}]` : a);
  return `${r.proto}:${br(r.hostAddr)}:${r.hostPort}-${br(r.guest)}:${r.guestPort}`;
}

export class HostForwarder {
  readonly rules: ActiveHostFwd[] = [];

  constructor(private readonly gw: UdpHost, private readonly tcp: TcpStack, private readonly host: HostAddrs,
    private readonly defaultGuest: () => number,
    /** VM name -> current address (leases, static hosts); enables forwards by name */
    private readonly resolveName?: (name: string) => number | null) {}

  /** A function giving the rule's guest address now (null: a named VM without an address). */
  private resolver(rule: ForwardRule): () => number | null {
    if (!rule.guest) return this.defaultGuest;
    const ip = parseAddr(rule.guest);
    if (ip !== null) {
      if (!this.gw.isLocal(ip)) throw new Error(`hostfwd ${ruleText(rule)}: guest address ${addrToString(ip)} is outside the network`);
      refAddr(ip); // the rule keeps it (forever: rules are few)
      return () => ip;
    }
    const byName = this.resolveName;
    if (!byName || !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(rule.guest)) {
      throw new Error(`hostfwd ${ruleText(rule)}: guest address '${rule.guest}' is not an IP address${byName ? ' or a VM name' : ''}`);
    }
    return () => byName(rule.guest);
  }

  async add(rule: ForwardRule): Promise<ActiveHostFwd> {
    const resolve = this.resolver(rule);
    const guestIp = resolve() ?? 0;
    const clash = this.rules.find((r) => r.proto === rule.proto && r.boundPort === rule.hostPort && rule.hostPort !== 0 && (r.hostAddr === rule.hostAddr || !r.hostAddr || !rule.hostAddr));
    if (clash) throw new Error(`hostfwd ${ruleText(rule)}: host port ${rule.hostPort} is already forwarded by ${ruleText(clash)}`);
    const fwd = rule.proto === 'tcp' ? await this.addTcp(rule, guestIp, resolve) : await this.addUdp(rule, guestIp, resolve);
    this.rules.push(fwd);
    log.info('forward added', { rule: ruleText(rule), bound: fwd.boundPort, guest: addrToString(guestIp) });
    return fwd;
  }

  /** Remove by host port (and protocol/address when given). Returns the removed rules. */
  remove(proto: 'tcp' | 'udp', hostPort: number, hostAddr?: string): ActiveHostFwd[] {
    const gone = this.rules.filter((r) => r.proto === proto && r.boundPort === hostPort && (hostAddr === undefined || r.hostAddr === hostAddr));
    for (const r of gone) {
      r.close();
      this.rules.splice(this.rules.indexOf(r), 1);
      log.info('forward removed', { rule: ruleText(r) });
    }
    return gone;
  }

  private async addTcp(rule: ForwardRule, guestIp: number, resolve: () => number | null): Promise<ActiveHostFwd> {
    const server = net.createServer({ noDelay: true, pauseOnConnect: true });
    const fwd: ActiveHostFwd = { ...rule, boundPort: 0, guestIp, connections: 0, close: () => server.close() };
    server.on('connection', (sock) => {
      const ip = resolve();
      if (ip === null) { log.warn('forward target has no address yet', { rule: ruleText(rule) }); sock.destroy(); return; }
      const from = hostAddrFor(ip, this.host);
      if (from < 0) { log.warn('forward target is IPv6 but the network has none', { rule: ruleText(rule) }); sock.destroy(); return; }
      const c = this.tcp.connect(ip, rule.guestPort, from);
      if (!c) { sock.destroy(); return; }
      fwd.connections++;
      c.attach(sock);
      sock.resume();
    });
    await listen(server, rule);
    fwd.boundPort = (server.address() as net.AddressInfo).port;
    return fwd;
  }

  private async addUdp(rule: ForwardRule, guestIp: number, resolve: () => number | null): Promise<ActiveHostFwd> {
    const sock = dgram.createSocket(rule.hostAddr.includes(':') ? 'udp6' : 'udp4');
    // each host peer gets its own gateway-side port, so guest replies find their way back
    const byPeer = new Map<string, { gwPort: number; timer: Timer; target: number; from: number }>();
    const fwd: ActiveHostFwd = {
      ...rule, boundPort: 0, guestIp, connections: 0,
      close: () => {
        for (const m of byPeer.values()) { this.gw.unbindUdp(m.from, m.gwPort); this.gw.timers.cancel(m.timer); }
        byPeer.clear();
        sock.close();
      },
    };
    let nextPort = 40000 + Math.floor(Math.random() * 10000);
    sock.on('message', (msg, rinfo) => {
      const key = `${rinfo.address}:${rinfo.port}`;
      let m = byPeer.get(key);
      if (!m) {
        const target = resolve();
        if (byPeer.size >= 1024 || target === null) return;
        const from = hostAddrFor(target, this.host);
        if (from < 0) return;
        const gwPort = nextPort = nextPort >= 65000 ? 40000 : nextPort + 1;
        const entry = { gwPort, target, from, timer: new Timer(() => { byPeer.delete(key); this.gw.unbindUdp(from, gwPort); }) };
        m = entry;
        byPeer.set(key, m);
        fwd.connections++;
        this.gw.bindUdp(from, gwPort, (d: UdpDatagram) => {
          if (d.srcIp !== target || d.srcPort !== rule.guestPort) return;
          this.gw.timers.arm(entry.timer, 120_000);
          sock.send(Buffer.from(d.payload), rinfo.port, rinfo.address);
        });
      }
      this.gw.timers.arm(m.timer, 120_000);
      this.gw.sendUdp(m.from, m.gwPort, m.target, rule.guestPort, msg);
    });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', (err) => reject(new Error(`hostfwd ${ruleText(rule)}: cannot bind: ${err.message}`)));
      sock.bind(rule.hostPort, rule.hostAddr || '0.0.0.0', () => resolve());
    });
    fwd.boundPort = sock.address().port;
    return fwd;
  }

  closeAll(): void { for (const r of this.rules.splice(0)) r.close(); }
}

function listen(server: net.Server, rule: ForwardRule): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new Error(`hostfwd ${ruleText(rule)}: cannot listen on ${rule.hostAddr || '*'}:${rule.hostPort}: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`));
    });
    server.listen(rule.hostPort, rule.hostAddr || undefined, () => resolve());
  });
}
