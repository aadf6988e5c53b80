// A QMP client over a unix socket: the QEMU Machine Protocol is newline-delimited JSON.
// On connect QEMU sends a greeting ({"QMP": {...}}); the client must send `qmp_capabilities`
// before any other command. Each command carries an `id` that QEMU echoes in its
// {"return": ...} or {"error": {"class", "desc"}} reply; asynchronous {"event": ...} messages
// may arrive at any time and are collected (the newest MAX_EVENTS) rather than interleaved
// with replies.
import net from 'node:net';
import { EventEmitter } from 'node:events';

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** QEMU answered a command with an error. */
export class QmpError extends Error {
  constructor(readonly errorClass: string, readonly desc: string, readonly command: string) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
  }
}

export interface RxFilterInfo {
  name: string;
  'main-mac': string;
  promiscuous: boolean;
  unicast: string;
  multicast: string;
  vlan: string;
  'broadcast-allowed': boolean;
  'multicast-overflow': boolean;
  'unicast-overflow': boolean;
  'unicast-table': string[];
  'multicast-table': string[];
  'vlan-table': number[];
}

export interface StatusInfo { status: string; running: boolean; singlestep?: boolean }

const MAX_EVENTS = 256;
const MAX_LINE = 16 << 20;

interface Pending { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; command: string }

export class QmpClient extends EventEmitter {
  greeting!: QmpGreeting;
  /** the newest events QEMU sent (at most MAX_EVENTS) */
  readonly events: QmpEvent[] = [];
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedError: Error | null = null;
  private greeted?: { resolve: (g: QmpGreeting) => void; reject: (e: Error) => void };

  private constructor(private readonly sock: net.Socket, readonly path: string, private readonly timeoutMs: number) {
    super();
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      // a QEMU that died mid-conversation shows up as a reset or a broken pipe: say what it means
      if (e.code === 'ECONNRESET' || e.code === 'EPIPE') this.fail(new Error(`QMP connection to ${path} closed (QEMU exited?): ${e.code}`));
      else this.fail(new Error(`QMP socket ${path}: ${e.message}`));
    });
    sock.on('close', () => this.fail(new Error(`QMP connection to ${path} closed (QEMU exited?)`)));
  }

  /** Connect, read the greeting and negotiate capabilities. */
  static async connect(path: string, opts: { timeoutMs?: number } = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = net.connect(path);
    const client = new QmpClient(sock, path, timeoutMs);
    const greeting = new Promise<QmpGreeting>((resolve, reject) => { client.greeted = { resolve, reject }; });
    let timer: NodeJS.Timeout | undefined;
    try {
      client.greeting = await Promise.race([
        greeting,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no QMP greeting from ${path} within ${timeoutMs} ms (is it a QMP socket? is another client holding it?)`)), timeoutMs);
        }),
      ]);
      await client.execute('qmp_capabilities');
      return client;
    } catch (e) {
      client.close();
      const err = e as NodeJS.ErrnoException;
      if (/ENOENT/.test(err.message)) throw new Error(`no QMP socket at ${path} (QEMU not running?)`);
      if (/ECONNREFUSED/.test(err.message)) throw new Error(`nothing listens on the QMP socket ${path} (QEMU exited?)`);
      if (/EACCES/.test(err.message)) throw new Error(`permission denied on the QMP socket ${path}: QEMU runs as another user`);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Run a QMP command; resolves to its `return` value, rejects with QmpError on an error reply. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = `qnet-${this.nextId++}`;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg.arguments = args;
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`QMP ${command}: no reply from ${this.path} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, command });
      this.sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /** `human-monitor-command`: run an HMP command line and return its text output. */
  hmp(commandLine: string): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine });
  }

  queryStatus(): Promise<StatusInfo> { return this.execute<StatusInfo>('query-status'); }
  async queryName(): Promise<string | undefined> { return (await this.execute<{ name?: string }>('query-name')).name; }
  /** RX filter state of every NIC, or of one (by its netclient name, e.g. the -device id) */
  queryRxFilter(name?: string): Promise<RxFilterInfo[]> {
    return this.execute<RxFilterInfo[]>('query-rx-filter', name === undefined ? undefined : { name });
  }
  /** set a NIC's or netdev's link up or down */
  setLink(name: string, up: boolean): Promise<void> { return this.execute<void>('set_link', { name, up }); }

  close(): void {
    this.fail(new Error(`QMP connection to ${this.path} closed`));
    this.sock.destroy();
  }

  private onData(d: string): void {
    this.buf += d;
    if (this.buf.length > MAX_LINE) { this.fail(new Error(`QMP ${this.path}: oversized message`)); this.sock.destroy(); return; }
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try { msg = JSON.parse(line) as Record<string, unknown>; } catch { return; }
    if (msg.QMP && this.greeted) {
      const g = this.greeted;
      this.greeted = undefined;
      g.resolve(msg.QMP as QmpGreeting);
      return;
    }
    if (typeof msg.event === 'string') {
      const ev = msg as unknown as QmpEvent;
      this.events.push(ev);
      if (this.events.length > MAX_EVENTS) this.events.shift();
      this.emit('event', ev);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id !== undefined ? this.pending.get(id) : undefined;
    if (!p || id === undefined) return; // a reply to a command that timed out
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (msg.error && typeof msg.error === 'object') {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError(err.class ?? 'GenericError', err.desc ?? 'unknown error', p.command));
    } else {
      p.resolve(msg.return);
    }
  }

  private fail(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    if (this.greeted) { this.greeted.reject(e); this.greeted = undefined; }
    for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(e); }
    this.pending.clear();
  }
}
