// Shared bits of the daemon-facing CLI commands: aligned tables, durations, byte counts,
// the `--api`/`--json`/`--help` options and error printing.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ApiError, DaemonUnreachableError, connectApi, type ApiClient } from '../daemon/client.ts';

/** Render rows as a left-aligned table with a header, columns separated by 3 spaces (podman style). */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => String(c)))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('   ').trimEnd())
    .join('\n') + '\n';
}

/** `3d 4h`, `2h 5m`, `4m 10s`, `12s` */
export function duration(sec: number): string {
  sec = Math.max(0, Math.floor(sec));
  const d = Math.floor(sec / 86400), h = Math.floor((sec % 86400) / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function json(v: unknown): string {
  return JSON.stringify(v, null, 2) + '\n';
}

export const commonOptions = {
  api: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** parseArgs with --api/--json/--help plus `extra`; a bad option becomes a usage error. */
export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], extra: O) {
  return parseArgs({ args: argv, allowPositionals: true, strict: true, options: { ...commonOptions, ...extra } });
}

export function client(api: string | undefined): ApiClient {
  return connectApi(api);
}

/** Print a command's failure the way every daemon command does; returns the exit code. */
export function fail(cmd: string, e: unknown): number {
  if (e instanceof DaemonUnreachableError) {
    process.stderr.write(`qnet ${cmd}: ${e.message}\n`);
    return 3;
  }
  if (e instanceof ApiError) {
    process.stderr.write(`qnet ${cmd}: ${e.message}\n`);
    return e.status === 404 ? 4 : 1;
  }
  process.stderr.write(`qnet ${cmd}: ${e instanceof Error ? e.message : String(e)}\n`);
  return 1;
}

/** Run `body`, turning usage errors (bad options) into exit code 2 with the usage text. */
export async function runCommand(cmd: string, usage: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`qnet ${cmd}: ${(e as Error).message}\n${usage}\n`);
      return 2;
    }
    return fail(cmd, e);
  }
}

export class UsageError extends Error {}

/** Seconds until `ms` (ms since the epoch), as "in 3h 2m", or "expired". */
export function until(ms: number, now = Date.now()): string {
  if (!Number.isFinite(ms) || ms <= 0) return 'never';
  const s = (ms - now) / 1000;
  return s <= 0 ? 'expired' : duration(s);
}
