// Flows counted per owner and capped. An owner is whatever a network says a guest address
// belongs to: the switch port that holds it (network/source-guard.ts), so a guest cannot
// escape its limit by sending from more addresses, or the address itself where nothing
// holds it (a service used without a network, tests).
//
// A flow remembers the owner it was counted under (take() returns it) and gives that back
// when it ends, so an address that changes hands meanwhile leaves the counts exact.

/** take(): the owner is at its limit. */
export const NO_OWNER = -1;

export class FlowLimit {
  private readonly counts = new Map<number, number>();
  /** the owner of a guest address; default: the address itself */
  ownerOf: (guestIp: number) => number = (ip) => ip;

  /** max: flows per owner; 0: no limit */
  constructor(public max: number) {}

  /** Count a new flow of guestIp: the owner it is counted under, or NO_OWNER when that owner has `max` already. */
  take(guestIp: number): number {
    const owner = this.ownerOf(guestIp);
    const n = this.counts.get(owner) ?? 0;
    if (this.max > 0 && n >= this.max) return NO_OWNER;
    this.counts.set(owner, n + 1);
    return owner;
  }

  /** Whether a new flow of guestIp would be refused (nothing counted). */
  full(guestIp: number): boolean {
    return this.max > 0 && (this.counts.get(this.ownerOf(guestIp)) ?? 0) >= this.max;
  }

  /** A flow counted under `owner` ended. */
  give(owner: number): void {
    const n = (this.counts.get(owner) ?? 1) - 1;
    if (n <= 0) this.counts.delete(owner); else this.counts.set(owner, n);
  }

  /** Flows counted under an owner. */
  countOf(owner: number): number { return this.counts.get(owner) ?? 0; }
}
