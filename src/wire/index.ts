// The wire layer: allocation-free codecs for Ethernet, ARP, IPv4/IPv6, ICMP, UDP and TCP.
// Everything is re-exported here so other layers import from one place.
export * from './addr.ts';
export * from './checksum.ts';
export * from './ethernet.ts';
export * from './arp.ts';
export * from './ipv4.ts';
export * from './udp.ts';
export * from './icmpv4.ts';
export * from './tcp.ts';
export * from './ipv6.ts';
export * from './icmpv6.ts';
