// Waiting for a condition instead of sleeping: tests wait for what a sleep would stand for (a
// frame arrived, a counter moved, a file appeared, a process said something), with a generous
// deadline that only guards against a hang. On a busy machine a condition just takes longer;
// a sleep would be too short.

export interface WaitOptions {
  /** what is awaited, for the error message ("3 ping replies") */
  what: string;
  /** hang guard (default 10 s); not a performance bound */
  timeoutMs?: number;
  /** polling interval (default 10 ms) */
  intervalMs?: number;
  /** extra text for the timeout error (console output, counters) */
  diag?: () => string;
  /** stop early with an error when this returns a reason (e.g. "the process exited") */
  abort?: () => string | undefined | false;
}

type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

/**
 * Poll `cond` until it returns a truthy value, and return that value. Rejects after `timeoutMs`
 * (or when `abort` gives a reason) with an error that names `what`.
 */
export async function waitFor<T>(cond: () => T | Promise<T>, opts: WaitOptions): Promise<Truthy<T>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v as Truthy<T>;
    const reason = opts.abort?.();
    if (reason) throw new Error(`${reason} while waiting for ${opts.what}${opts.diag ? `\n${opts.diag()}` : ''}`);
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what}${opts.diag ? `\n${opts.diag()}` : ''}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 10));
  }
}
