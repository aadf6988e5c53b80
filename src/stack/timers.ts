// One timer mechanism for every flow (retransmission, delayed ACK, idle timeouts,
// reassembly): a binary heap of deadlines driven by a single node timeout.
//
// Re-arming is cheap on purpose: moving a deadline later only updates a field; the heap
// entry fires at the old time, sees the new deadline and re-inserts itself. So a TCP
// flow that pushes its retransmission deadline on every ACK does no heap work per ACK.

export class Timer {
  /** ms (performance.now() clock); 0 = not armed */
  deadline = 0;
  /** when the heap entry for this timer fires; 0 = no entry */
  scheduled = 0;
  constructor(readonly fn: () => void) {}
}

export class TimerQueue {
  private heap: Timer[] = [];
  private handle: NodeJS.Timeout | null = null;
  private handleAt = 0;
  private readonly run = (): void => this.fire();

  /** Arm (or re-arm) t to fire `ms` from now. */
  arm(t: Timer, ms: number): void {
    const at = performance.now() + ms;
    t.deadline = at;
    if (t.scheduled !== 0 && t.scheduled <= at) return; // the existing entry fires first and re-checks
    if (t.scheduled !== 0) this.remove(t);
    t.scheduled = at;
    this.push(t);
    this.reschedule();
  }

  cancel(t: Timer): void { t.deadline = 0; }

  get size(): number { return this.heap.length; }

  private fire(): void {
    this.handle = null;
    const now = performance.now() + 1; // 1 ms slack: node timers may fire a hair early
    const h = this.heap;
    while (h.length > 0 && h[0].scheduled <= now) {
      const t = this.pop();
      t.scheduled = 0;
      if (t.deadline === 0) continue;
      if (t.deadline > now) { t.scheduled = t.deadline; this.push(t); continue; }
      t.deadline = 0;
      try { t.fn(); } catch { /* a flow's bug must not stop every other timer */ }
    }
    this.reschedule();
  }

  private reschedule(): void {
    if (this.heap.length === 0) {
      if (this.handle) { clearTimeout(this.handle); this.handle = null; }
      return;
    }
    const next = this.heap[0].scheduled;
    if (this.handle && this.handleAt <= next) return;
    if (this.handle) clearTimeout(this.handle);
    this.handleAt = next;
    this.handle = setTimeout(this.run, Math.max(0, next - performance.now()));
    this.handle.unref?.();
  }

  close(): void {
    if (this.handle) clearTimeout(this.handle);
    this.handle = null;
    for (const t of this.heap) { t.scheduled = 0; t.deadline = 0; }
    this.heap = [];
  }

  private push(t: Timer): void {
    const h = this.heap;
    h.push(t);
    let i = h.length - 1;
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
    if (h.length > 0) this.sift(0, last);
    return top;
  }

  private sift(i: number, t: Timer): void {
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
  }

  private remove(t: Timer): void {
    const h = this.heap;
    const i = h.indexOf(t);
    if (i < 0) return;
    const last = h.pop()!;
    if (i < h.length) {
      // re-insert `last` at i: sift down then up
      this.sift(i, last);
      let j = h.indexOf(last);
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (h[p].scheduled <= last.scheduled) break;
        h[j] = h[p];
        h[p] = last;
        j = p;
      }
    }
  }
}
