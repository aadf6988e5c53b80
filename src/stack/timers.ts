// One timer mechanism for every flow (retransmission, keepalive, idle timeouts, reassembly,
// DNS retries): a binary heap of deadlines on one clock, driven by a single node timeout.
//
// Time is injected: a TimerQueue reads its Clock and never performance.now() directly, so the
// protocol code above it (TCP above all) runs the same against a manual clock in tests, where
// `runUntil(t)` fires every due timer in deadline order without any real waiting.
//
// Re-arming is cheap on purpose: moving a deadline later only updates a field; the heap
// entry fires at the old time, sees the new deadline and re-inserts itself. So a TCP
// flow that pushes its retransmission deadline on every ACK does no heap work per ACK.

/** Milliseconds on a monotonic clock. */
export interface Clock { now(): number }

/**
 * The real clock, read once per batch: the first reading caches performance.now() until the
 * current job's microtasks are done, so all frames of one read from QEMU (and the timers of one
 * firing) share a time, as a kernel's per-batch timestamp does. Reading the clock per segment
 * cost several percent of the packet path.
 */
class BatchClock implements Clock {
  private t = -1;
  private readonly clear = (): void => { this.t = -1; };
  now(): number {
    if (this.t < 0) { this.t = performance.now(); queueMicrotask(this.clear); }
    return this.t;
  }
}

export const realClock: Clock = new BatchClock();

/** A clock that moves only when told to (tests; replays). */
export class ManualClock implements Clock {
  constructor(public t = 0) {}
  now(): number { return this.t; }
}

export class Timer {
  /** ms on the queue's clock; -1 = not armed */
  deadline = -1;
  /** when the heap entry for this timer fires; -1 = no entry */
  scheduled = -1;
  constructor(readonly fn: () => void) {}
  get armed(): boolean { return this.deadline >= 0; }
}

export interface TimerQueueOptions {
  /**
   * Drive the queue with a node timeout (default). Off for a manual clock: the owner then
   * calls runDue()/runUntil() itself.
   */
  autoRun?: boolean;
  /** A timer callback threw: the queue goes on with the other timers. */
  onError?: (err: unknown) => void;
}

export class TimerQueue {
  private heap: Timer[] = [];
  private handle: NodeJS.Timeout | null = null;
  private handleAt = 0;
  private readonly autoRun: boolean;
  private readonly onError: (err: unknown) => void;
  private readonly run = (): void => { this.handle = null; this.runDue(); };
  /** timer callbacks that threw */
  errors = 0;

  constructor(readonly clock: Clock = realClock, opts: TimerQueueOptions = {}) {
    this.autoRun = opts.autoRun ?? true;
    this.onError = opts.onError ?? (() => {});
  }

  now(): number { return this.clock.now(); }

  /** Arm (or re-arm) t to fire `ms` from now. */
  arm(t: Timer, ms: number): void {
    const at = this.clock.now() + ms;
    t.deadline = at;
    if (t.scheduled >= 0 && t.scheduled <= at) return; // the existing entry fires first and re-checks
    if (t.scheduled >= 0) this.remove(t);
    t.scheduled = at;
    this.push(t);
    this.reschedule();
  }

  cancel(t: Timer): void { t.deadline = -1; }

  get size(): number { return this.heap.length; }

  /** The earliest pending heap entry (it may turn out to be a re-armed or cancelled timer), or -1. */
  get nextAt(): number { return this.heap.length > 0 ? this.heap[0].scheduled : -1; }

  /** Fire every timer whose deadline has passed. */
  runDue(): void {
    // 1 ms slack for the node timeout, which may fire a hair early; none for a manual clock
    const now = this.clock.now() + (this.autoRun ? 1 : 0);
    const h = this.heap;
    while (h.length > 0 && h[0].scheduled <= now) {
      const t = this.pop();
      t.scheduled = -1;
      if (t.deadline < 0) continue;
      if (t.deadline > now) { t.scheduled = t.deadline; this.push(t); continue; }
      t.deadline = -1;
      try { t.fn(); } catch (err) { this.errors++; this.onError(err); }
    }
    this.reschedule();
  }

  /**
   * Manual clocks: advance `clock` to `until`, stopping at each pending deadline on the way
   * and firing what is due there, so timers fire in order and at their own times.
   */
  runUntil(clock: ManualClock, until: number): void {
    for (let guard = 0; guard < 1_000_000; guard++) {
      const next = this.nextAt;
      if (next < 0 || next > until) break;
      if (next > clock.t) clock.t = next;
      this.runDue();
    }
    if (until > clock.t) clock.t = until;
  }

  private reschedule(): void {
    if (!this.autoRun) return;
    if (this.heap.length === 0) {
      if (this.handle) { clearTimeout(this.handle); this.handle = null; }
      return;
    }
    const next = this.heap[0].scheduled;
    if (this.handle && this.handleAt <= next) return;
    if (this.handle) clearTimeout(this.handle);
    this.handleAt = next;
    this.handle = setTimeout(this.run, Math.max(0, next - this.clock.now()));
    this.handle.unref?.();
  }

  close(): void {
    if (this.handle) clearTimeout(this.handle);
    this.handle = null;
    for (const t of this.heap) { t.scheduled = -1; t.deadline = -1; }
    this.heap = [];
  }

  private push(t: Timer): void {
    const h = this.heap;
    h.push(t);
    this.siftUp(h.length - 1, t);
  }

  private siftUp(i: number, t: Timer): void {
    const h = this.heap;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].scheduled <= t.scheduled) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = t;
  }

  private pop(): Timer {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) this.siftDown(0, last);
    return top;
  }

  /** Place t at i or below; returns where it ended up. */
  private siftDown(i: number, t: Timer): number {
    const h = this.heap;
    const n = h.length;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h[c + 1].scheduled < h[c].scheduled) c++;
      if (h[c].scheduled >= t.scheduled) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = t;
    return i;
  }

  private remove(t: Timer): void {
    const h = this.heap;
    const i = h.indexOf(t);
    if (i < 0) return;
    const last = h.pop()!;
    if (i < h.length) this.siftUp(this.siftDown(i, last), last);
  }
}
