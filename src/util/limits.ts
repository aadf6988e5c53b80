// Limit hits made visible: every per-guest (or per-listener) limit that refuses something
// reports it here. A hit is counted per (limit, port) for `/metrics`, and logged at most once
// per interval per (limit, port) with the limit's value, how many hits the interval saw and
// what to do about it; a guest hammering a limit costs a counter increment, not a log line.
//
// Memory is bounded whatever the guests do: at most `maxKeys` (limit, port) pairs are kept;
// beyond that new pairs are counted under port "(other)". Ports are names such as
// `stream#12(/run/qnet/lab.sock)` (unique per connection) or a guest address where the
// service knows no port.
import type { Logger } from './log.ts';

export interface LimitHit {
  limit: string;
  port: string;
  /** the limit's value when it was last hit */
  value: number;
  /** hits since start */
  count: number;
}

interface Entry extends LimitHit {
  /** ms: when this pair was last logged */
  loggedAt: number;
  /** hits since then */
  unlogged: number;
}

export interface LimitLogOptions {
  /** at most one log line per (limit, port) per interval; default 60 s */
  intervalMs?: number;
  /** (limit, port) pairs kept; default 1024 */
  maxKeys?: number;
  now?: () => number;
}

/** What a component that enforces limits needs (services and transports take this). */
export interface LimitReporter {
  /**
   * `limit` refused something on `port`; `hint` says what to do (logged). `fields` (or a
   * function making them, called only when a line is logged) add detail to the log line.
   */
  hit(limit: string, value: number, port: string, hint: string, fields?: Fields): void;
}

export const OTHER_PORT = '(other)';

type Fields = Record<string, unknown> | (() => Record<string, unknown>);

export class LimitLog implements LimitReporter {
  /** limit -> port -> entry (no string building on the hot path of a flood) */
  private readonly entries = new Map<string, Map<string, Entry>>();
  private size = 0;
  private readonly intervalMs: number;
  private readonly maxKeys: number;
  private readonly now: () => number;

  constructor(private readonly log: Logger, opts: LimitLogOptions = {}) {
    this.intervalMs = opts.intervalMs ?? 60_000;
    this.maxKeys = opts.maxKeys ?? 1024;
    this.now = opts.now ?? Date.now;
  }

  hit(limit: string, value: number, port: string, hint: string, fields?: Fields): void {
    let byPort = this.entries.get(limit);
    if (byPort === undefined) { byPort = new Map(); this.entries.set(limit, byPort); }
    let e = byPort.get(port);
    if (e === undefined) {
      if (this.size >= this.maxKeys) {
        port = OTHER_PORT;
        e = byPort.get(port);
      }
      if (e === undefined) {
        e = { limit, port, value, count: 0, loggedAt: -Infinity, unlogged: 0 };
        byPort.set(port, e);
        this.size++;
      }
    }
    e.count++;
    e.unlogged++;
    e.value = value;
    const now = this.now();
    if (now - e.loggedAt < this.intervalMs) return;
    const extra = typeof fields === 'function' ? fields() : fields;
    this.log.warn(`limit reached: ${limit}`, { port, limit: value, hits: e.unlogged, ...extra, hint });
    e.loggedAt = now;
    e.unlogged = 0;
  }

  /** Every (limit, port) pair hit so far, for metrics. */
  snapshot(): LimitHit[] {
    const out: LimitHit[] = [];
    for (const byPort of this.entries.values()) for (const { limit, port, value, count } of byPort.values()) out.push({ limit, port, value, count });
    return out;
  }

  /** Hits of one limit (all ports, or one), for tests and status. */
  count(limit: string, port?: string): number {
    let n = 0;
    for (const e of this.entries.get(limit)?.values() ?? []) if (port === undefined || e.port === port) n += e.count;
    return n;
  }
}
