// Round-trip time and retransmission timeout (RFC 6298), one segment timed at a time.
//
// - A sample is taken when the ACK covers the timed segment; a segment sent again is never
//   timed (Karn's algorithm: invalidate() on every retransmission).
// - RTO = SRTT + 4 * RTTVAR, clamped to [min, max]; before the first sample it is `initial`.
// - backoff() doubles the RTO after a timeout (capped); the next sample recomputes it.
// Time is whatever clock the caller passes in (ms).

export interface RttLimits { min: number; max: number; initial: number }

export const DEFAULT_RTT_LIMITS: RttLimits = { min: 200, max: 60_000, initial: 1000 };

export class RttEstimator {
  srtt = 0;
  rttvar = 0;
  rto: number;
  /** samples taken (the first one initialises srtt; a 0 ms sample is a real one) */
  samples = 0;
  /** sequence number whose ACK ends the timed segment; -1 = none timed */
  private timedEnd = -1;
  private timedAt = 0;

  constructor(private readonly limits: RttLimits = DEFAULT_RTT_LIMITS) {
    this.rto = limits.initial;
  }

  get timing(): boolean { return this.timedEnd >= 0; }

  /** Time a segment ending at `end` (sent for the first time at `now`), unless one is already timed. */
  start(end: number, now: number): void {
    if (this.timedEnd >= 0) return;
    this.timedEnd = end;
    this.timedAt = now;
  }

  /** An ACK up to `ack` arrived at `now`: sample if it covers the timed segment. */
  acked(ack: number, now: number): void {
    if (this.timedEnd < 0 || ((this.timedEnd - ack) | 0) > 0) return;
    this.timedEnd = -1;
    this.sample(now - this.timedAt);
  }

  /** A retransmission happened: the timed segment's ACK would be ambiguous. */
  invalidate(): void { this.timedEnd = -1; }

  /** After a retransmission timeout. */
  backoff(): void { this.rto = Math.min(this.limits.max, this.rto * 2); }

  sample(r: number): void {
    if (this.samples++ === 0) { this.srtt = r; this.rttvar = r / 2; }
    else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(this.limits.max, Math.max(this.limits.min, this.srtt + 4 * this.rttvar));
  }
}
