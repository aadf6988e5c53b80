// Congestion control: how much may be in flight towards the guest. The connection keeps the
// loss-recovery state (which holes to resend, when recovery ends); a controller only sizes
// the window from the events it is told about, so another algorithm (CUBIC, say) is one more
// class behind the same interface.
//
// NewReno (RFC 5681, RFC 6582): initial window 10 segments (RFC 6928); slow start adds up to
// one MSS per ACK below ssthresh, congestion avoidance about one MSS per round trip above it;
// entering fast recovery halves the flight into ssthresh and sets cwnd to it; leaving
// recovery (a full ACK) keeps cwnd at ssthresh; a timeout halves the flight into ssthresh
// and restarts from one segment. cwnd is capped by the send buffer (`max`).

export interface CongestionControl {
  readonly name: string;
  /** bytes that may be in flight */
  readonly cwnd: number;
  readonly ssthresh: number;
  /** the connection's MSS became known (SYN options) */
  init(mss: number): void;
  /** `acked` bytes of new data were acknowledged outside recovery */
  onAck(acked: number): void;
  /** duplicate ACKs (or SACKs) signalled a loss while `flight` bytes were outstanding */
  onLoss(flight: number): void;
  /** the loss episode is over (an ACK covered everything sent before it began) */
  onRecovered(): void;
  /** the retransmission timer expired with `flight` bytes outstanding */
  onTimeout(flight: number): void;
}

export class NewReno implements CongestionControl {
  readonly name = 'newreno';
  cwnd = 0;
  ssthresh = 1 << 30;
  private mss = 536;

  constructor(private readonly max: number) {}

  init(mss: number): void {
    this.mss = mss;
    this.cwnd = 10 * mss;
  }

  onAck(acked: number): void {
    if (this.cwnd < this.ssthresh) this.cwnd += Math.min(acked, this.mss);
    else this.cwnd += Math.max(1, Math.floor((this.mss * this.mss) / this.cwnd));
    if (this.cwnd > this.max) this.cwnd = this.max;
  }

  onLoss(flight: number): void {
    this.ssthresh = Math.max(2 * this.mss, Math.floor(flight / 2));
    this.cwnd = this.ssthresh;
  }

  onRecovered(): void {
    this.cwnd = this.ssthresh;
  }

  onTimeout(flight: number): void {
    this.ssthresh = Math.max(2 * this.mss, Math.floor(flight / 2));
    this.cwnd = this.mss;
  }
}
