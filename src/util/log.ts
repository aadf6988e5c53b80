// Structured logging: one line per event, `time level component msg key=value...`.
// Off the packet path by design: callers on hot paths check `log.enabled(level)` first
// (or count instead of logging).

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold = ORDER[(process.env.QNET_LOG as Level) in ORDER ? (process.env.QNET_LOG as Level) : 'info'];
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');
let jsonMode = process.env.QNET_LOG_FORMAT === 'json';

export function setLogLevel(level: Level): void { threshold = ORDER[level]; }
export function setLogSink(fn: (line: string) => void): void { sink = fn; }
export function setLogJson(on: boolean): void { jsonMode = on; }

function fmtValue(v: unknown): string {
  const s = typeof v === 'string' ? v : v instanceof Error ? v.message : JSON.stringify(v);
  return /[\s"=]/.test(s) ? JSON.stringify(s) : s;
}

export class Logger {
  constructor(readonly component: string) {}
  enabled(level: Level): boolean { return ORDER[level] >= threshold; }
  child(sub: string): Logger { return new Logger(`${this.component}/${sub}`); }
  log(level: Level, msg: string, fields?: Record<string, unknown>): void {
    if (ORDER[level] < threshold) return;
    const time = new Date().toISOString();
    if (jsonMode) {
      sink(JSON.stringify({ time, level, component: this.component, msg, ...fields }));
      return;
    }
    let line = `${time} ${level.padEnd(5)} ${this.component}: ${msg}`;
    if (fields) for (const k in fields) if (fields[k] !== undefined) line += ` ${k}=${fmtValue(fields[k])}`;
    sink(line);
  }
  debug(msg: string, fields?: Record<string, unknown>): void { this.log('debug', msg, fields); }
  info(msg: string, fields?: Record<string, unknown>): void { this.log('info', msg, fields); }
  warn(msg: string, fields?: Record<string, unknown>): void { this.log('warn', msg, fields); }
  error(msg: string, fields?: Record<string, unknown>): void { this.log('error', msg, fields); }
}

export function logger(component: string): Logger { return new Logger(component); }
