// Where a guest's destination goes on the host, and how a failure to get there is reported
// back, for either family. The gateway's "host" addresses reach the host's loopback, as in
// slirp (10.0.2.2 -> 127.0.0.1, fec0::2 -> ::1); anything else is that address.
import { V6_BASE, addrToString } from '../stack/addr.ts';
import { ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, ICMP_NET_UNREACH, ICMP_PORT_UNREACH } from '../wire/icmpv4.ts';
import { ICMPV6_DEST_UNREACH } from '../wire/icmpv6.ts';

/** The gateway addresses that stand for the host (-1: that family has none). */
export interface HostAddrs { v4: number; v6: number }

export function hostTarget(dst: number, host: HostAddrs): string {
  if (dst === host.v4) return '127.0.0.1';
  if (dst === host.v6) return '::1';
  return addrToString(dst);
}

/** The host address of dst's family (the source of errors the gateway itself reports). */
export function hostAddrFor(dst: number, host: HostAddrs): number {
  return dst >= V6_BASE ? host.v6 : host.v4;
}

export type Unreachable = 'net' | 'host' | 'port';

/** ICMP (IPv4) or ICMPv6 destination-unreachable type and code for a guest address's family. */
export function unreachable(guest: number, why: Unreachable): [number, number] {
  if (guest >= V6_BASE) return [ICMPV6_DEST_UNREACH, why === 'net' ? 0 : why === 'host' ? 3 : 4];
  return [ICMP_DEST_UNREACH, why === 'net' ? ICMP_NET_UNREACH : why === 'host' ? ICMP_HOST_UNREACH : ICMP_PORT_UNREACH];
}

/** What a failed host connect or send (errno code) means for the guest. */
export function unreachableFor(code: string | undefined): Unreachable {
  return code === 'ENETUNREACH' || code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT' ? 'net' : 'host';
}
