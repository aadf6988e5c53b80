// guestfwd: guest connections to a virtual address:port are relayed to a host-side target,
// as with QEMU's `guestfwd=[tcp]:server:port-TARGET`: `cmd:COMMAND` (spawned per
// connection, talking over its stdin/stdout), `tcp:HOST:PORT` or `unix:PATH`. The virtual
// address need not exist anywhere: the gateway answers ARP for it.
import net from 'node:net';
import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import type { TcpConn } from '../stack/tcp.ts';
import { logger } from '../util/log.ts';

const log = logger('guestfwd');

export type GuestFwdTarget =
  | { kind: 'cmd'; command: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string };

export interface GuestFwdRule { server: number; port: number; target: GuestFwdTarget; text: string }

export class GuestForwarder {
  readonly stats = { connections: 0, failures: 0 };
  constructor(readonly rules: GuestFwdRule[]) {}

  /** The rule for a guest destination, if any (server 0 = any address). */
  match(ip: number, port: number): GuestFwdRule | undefined {
    return this.rules.find((r) => r.port === port && (r.server === ip || r.server === 0));
  }

  open(c: TcpConn, rule: GuestFwdRule): void {
    this.stats.connections++;
    const t = rule.target;
    if (t.kind === 'cmd') {
      const child = spawn('/bin/sh', ['-c', t.command], { stdio: ['pipe', 'pipe', 'inherit'] });
      const duplex = Duplex.from({ readable: child.stdout, writable: child.stdin });
      child.on('error', (err) => { this.stats.failures++; log.warn('command failed', { rule: rule.text, error: err.message }); });
      duplex.on('close', () => { if (child.exitCode === null) child.kill(); });
      c.attach(duplex);
      return;
    }
    const sock = t.kind === 'tcp' ? net.connect({ host: t.host, port: t.port, noDelay: true }) : net.connect(t.path);
    let up = false;
    sock.once('connect', () => { up = true; c.attach(sock); });
    sock.once('error', (err) => {
      if (up) return;
      this.stats.failures++;
      log.warn('target unreachable', { rule: rule.text, error: err.message });
      c.refuse();
    });
  }
}
