// A packet socket (AF_PACKET, SOCK_RAW) on one interface as a port: what a kernel network's
// services use to meet the guests on a Linux bridge without sitting on its data path.
//
// Bound to the bridge device, the socket sees the frames the bridge delivers to the host
// (broadcasts and frames to the bridge's own MAC), never guest-to-guest traffic, and a frame
// written to it is transmitted by the bridge to its ports. A classic BPF filter, attached
// before the socket is bound, keeps everything the service does not want in the kernel (a
// busy NAT network's traffic to the host is not copied to us); outgoing frames are not
// delivered (PACKET_IGNORE_OUTGOING, and the filters below check the packet type too).
// Reads are drained in batches by the native addon, like taps (sys-port.ts).
import { sys, sysErrorCode, type SysHandle } from './sys.ts';
import { SysFramePort } from './sys-port.ts';

const RX_BYTES = 1 << 18;

/** One classic BPF instruction (struct sock_filter). */
export interface BpfInsn { code: number; jt: number; jf: number; k: number }

export function bpfProgram(insns: BpfInsn[]): Buffer {
  const b = Buffer.alloc(insns.length * 8);
  insns.forEach((x, i) => {
    b.writeUInt16LE(x.code, i * 8);
    b.writeUInt8(x.jt, i * 8 + 2);
    b.writeUInt8(x.jf, i * 8 + 3);
    b.writeUInt32LE(x.k >>> 0, i * 8 + 4);
  });
  return b;
}

const LD_W_ABS = 0x20, LD_H_ABS = 0x28, LD_B_ABS = 0x30, LD_H_IND = 0x48, LDX_B_MSH = 0xb1;
const JEQ = 0x15, JSET = 0x45, RET = 0x06;
const SKF_AD_PKTTYPE = 0xfffff000 + 4;
const PACKET_OUTGOING = 4;

/** Accept IPv4 UDP (not fragments) to `port` that the host received; drop everything else. */
export function udpPortFilter(port: number): Buffer {
  const drop = 12;
  return bpfProgram([
    { code: LD_W_ABS, jt: 0, jf: 0, k: SKF_AD_PKTTYPE },          // 0
    { code: JEQ, jt: drop - 2, jf: 0, k: PACKET_OUTGOING },         // 1
    { code: LD_H_ABS, jt: 0, jf: 0, k: 12 },                        // 2 ethertype
    { code: JEQ, jt: 0, jf: drop - 4, k: 0x0800 },                  // 3
    { code: LD_B_ABS, jt: 0, jf: 0, k: 23 },                        // 4 protocol
    { code: JEQ, jt: 0, jf: drop - 6, k: 17 },                      // 5
    { code: LD_H_ABS, jt: 0, jf: 0, k: 20 },                        // 6 flags + fragment offset
    { code: JSET, jt: drop - 8, jf: 0, k: 0x1fff },                 // 7
    { code: LDX_B_MSH, jt: 0, jf: 0, k: 14 },                       // 8 X = IP header length
    { code: LD_H_IND, jt: 0, jf: 0, k: 16 },                        // 9 UDP destination port
    { code: JEQ, jt: 0, jf: drop - 11, k: port },                   // 10
    { code: RET, jt: 0, jf: 0, k: 0x40000 },                        // 11 accept
    { code: RET, jt: 0, jf: 0, k: 0 },                              // 12 drop
  ]);
}

export class PacketPort extends SysFramePort {
  private constructor(handle: SysHandle, readonly ifname: string) {
    super('packet', ifname, handle, RX_BYTES, 'packet socket');
  }

  /** A packet socket on interface `ifname` with an optional BPF filter (needs CAP_NET_RAW). */
  static open(ifname: string, filter: Buffer | null): PacketPort {
    try {
      return new PacketPort(sys().openPacket(ifname, filter), ifname);
    } catch (e) {
      const code = sysErrorCode(e);
      const hint = code === 'EPERM' || code === 'EACCES' ? ' (packet sockets need root or CAP_NET_RAW)' : code === 'ENODEV' ? ' (no such interface)' : '';
      throw new Error(`cannot open a packet socket on ${ifname}: ${(e as Error).message}${hint}`);
    }
  }
}
