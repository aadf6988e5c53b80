// The process's descriptor budget. Every guest flow that holds a host socket (TCP/UDP NAT,
// ICMP ids) costs a descriptor, and guests can open flows at will; the control API, new VM
// connections, DNS, TFTP and state saving must never find the process at its limit. So the
// limit is split: `reserve` descriptors are kept for qnet's own work (sized from what those
// can hold at most: the API's connection caps, the attach sockets' caps, the DNS socket
// pool, TFTP transfers) and guest flows together may use only `flows` (the rest).
//
// The budget is a counter, not a syscall: whoever opens a host socket for a guest calls
// tryAcquire() first (false: refuse the flow, and report the limit hit) and release() when
// it is closed. At start the daemon raises the soft RLIMIT_NOFILE to the hard limit (Node
// does this itself too, as an implementation detail; qnet does not rely on it) and logs the
// split.

export interface NofileLimits {
  /** soft limit when qnet started */
  before: number;
  soft: number;
  hard: number;
}

export class FdBudget {
  /** descriptors guest flows may hold together */
  readonly flows: number;
  used = 0;
  /** tryAcquire() refusals */
  refused = 0;

  constructor(readonly limit: number, readonly reserve: number) {
    this.flows = Math.max(0, limit - reserve);
  }

  /** Take `n` descriptors for guest flows; false when that would eat into the reserve. */
  tryAcquire(n = 1): boolean {
    if (this.used + n > this.flows) { this.refused++; return false; }
    this.used += n;
    return true;
  }

  release(n = 1): void {
    this.used = Math.max(0, this.used - n);
  }
}

/** The reserve for a limit: what qnet's own work needs, but never more than half the limit. */
export function reserveFor(limit: number, needed: number): number {
  return Math.min(Math.floor(limit / 2), Math.max(needed, 256));
}
