// The host layer's part of the native addon (native/qnet_host.c): the calls Node cannot make
// for kernel networks. Loaded through the link layer's loader (one addon, one build).
//
//   createTap       TUNSETIFF (+ IFF_VNET_HDR, TUNSETOWNER/GROUP, TUNSETPERSIST) -> [fd, name]
//   tunFeatures     TUNGETFEATURES
//   sendFds         sendmsg with SCM_RIGHTS (the daemon handing a tap to a client or QEMU)
//   unixRequest     connect + send + read to EOF collecting SCM_RIGHTS (the client side)
//   peerCred        SO_PEERCRED + SO_PEERGROUPS of a connected unix socket
//   fileCapability  the security.capability xattr (is qemu-bridge-helper given cap_net_admin?)
import { sys } from '../link/sys.ts';

export interface PeerCred { pid: number; uid: number; gid: number; groups: number[] }

export interface HostNative {
  tunFeatures(): number;
  createTap(name: string, opts: { vnetHdr?: boolean; owner?: number; group?: number; persist?: boolean }): [number, string];
  /** 0 or an errno */
  sendFds(sock: number, data: Buffer, fds: number[], timeoutMs: number): number;
  unixRequest(path: string, data: Buffer, timeoutMs: number): { data: Buffer; fds: number[] };
  peerCred(sock: number): PeerCred;
  /** 0 or an errno */
  closeFd(fd: number): number;
  fileCapability(path: string): Buffer | null;
}

export function hostNative(): HostNative {
  return sys() as unknown as HostNative;
}
