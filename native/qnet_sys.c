// qnet_sys: the three socket kinds Node lacks, as small N-API bindings.
//
//   unix datagram sockets  (AF_UNIX, SOCK_DGRAM)          QEMU -netdev dgram,local.type=unix
//   ICMP echo sockets, IPv4 and IPv6: "ping" sockets (SOCK_DGRAM, the kernel owns the
//   identifier; no privilege beyond net.ipv4.ping_group_range), or raw sockets (SOCK_RAW,
//   CAP_NET_RAW) where ping sockets are not permitted
//   tap devices            (/dev/net/tun, IFF_TAP|IFF_NO_PI)
//   packet sockets         (AF_PACKET, SOCK_RAW on one interface, with a classic BPF filter)
//
// The host layer's calls (tap creation for QEMU, descriptor passing, peer credentials) are in
// qnet_host.c and registered by init() below.
//
// and one process setting Node has no call for: raising the soft RLIMIT_NOFILE (raiseNofile).
//
// Every descriptor is non-blocking and watched with a uv_poll_t on Node's own loop. On
// readiness the socket is drained (up to QH_MAX_BATCH datagrams) into a receive buffer
// owned by JS, the per-datagram metadata is written into a Uint32Array owned by JS, and a
// single JS callback is made per wakeup: cb(count, senders, errno). Sends are synchronous
// and return 0 or an errno (EAGAIN: the caller counts a drop).
//
// Metadata layout, QH_STRIDE u32 per datagram:
//   [0] offset in the receive buffer   [1] real length (may exceed the slot: truncated)
//   [2] peer IPv4 (host order; ICMP)   [3] flags: 0 = data; ICMP_ERR | type << 8 | code
//   [4] original destination IPv4 of an ICMP error (host order)
//   [5..8] peer IPv6 (16 bytes as they are on the wire; ICMPv6)
//   [9..12] original destination IPv6 of an ICMPv6 error
// A raw IPv4 socket receives the IP header too: [0] and [1] then describe the ICMP message
// after it, so both socket kinds deliver the same thing.
//
// Lifetime: a handle is referenced by its JS wrapper and by its poll handle; the memory is
// freed when both are gone (wrapper finalized and uv_close completed). The fd is closed in
// the uv_close callback, after libuv has stopped watching it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/errqueue.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <node_api.h>
#include "qnet_napi.h"
#include <uv.h>

#define QH_MAX_BATCH 64
#define QH_STRIDE 13
#define QH_ICMP_ERR 0x80000000u

enum { KIND_UNIX = 1, KIND_ICMP = 2, KIND_TAP = 3, KIND_PACKET = 4 };

void qnet_host_init(napi_env env, napi_value exports);

typedef struct {
  uv_poll_t poll;
  napi_env env;
  int fd;
  int kind;
  int family;      // ICMP: AF_INET or AF_INET6
  int raw;         // ICMP: a raw socket (else a ping socket)
  int refs;        // JS wrapper + poll handle
  int closed;
  int polling;
  napi_ref cb;
  napi_ref data_ref;
  napi_ref info_ref;
  napi_async_context actx;
  uint8_t *data;
  size_t data_len;
  size_t slot;
  uint32_t *info;
  size_t info_len;  // in u32 elements
} qh_t;

#define CHECK(call)                                                    \
  do {                                                                 \
    if ((call) != napi_ok) {                                           \
      throw_last(env, #call);                                          \
      return NULL;                                                     \
    }                                                                  \
  } while (0)

static void throw_last(napi_env env, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  napi_throw_error(env, NULL, info && info->error_message ? info->error_message : what);
}

static int set_nonblock_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) return -1;
  return 0;
}

static void qh_unref(qh_t *h) {
  if (--h->refs == 0) free(h);
}

static void on_uv_closed(uv_handle_t *p) {
  qh_t *h = (qh_t *)p->data;
  if (h->fd >= 0) close(h->fd);
  h->fd = -1;
  qh_unref(h);
}

// Stop polling, drop JS references, close the poll handle (the fd follows in its callback).
static void qh_close(qh_t *h, int in_finalizer) {
  if (h->closed) return;
  h->closed = 1;
  if (h->polling) uv_poll_stop(&h->poll);
  h->polling = 0;
  napi_env env = h->env;
  if (h->cb) napi_delete_reference(env, h->cb);
  if (h->data_ref) napi_delete_reference(env, h->data_ref);
  if (h->info_ref) napi_delete_reference(env, h->info_ref);
  h->cb = h->data_ref = h->info_ref = NULL;
  if (h->actx && !in_finalizer) napi_async_destroy(env, h->actx);
  h->actx = NULL;
  h->data = NULL;
  h->info = NULL;
  uv_close((uv_handle_t *)&h->poll, on_uv_closed);
}

static void qh_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  qh_t *h = (qh_t *)data;
  qh_close(h, 1);
  qh_unref(h);
}

// Wrap an open fd into a JS handle object; closes fd on failure.
static napi_value qh_new(napi_env env, int fd, int kind) {
  uv_loop_t *loop = NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == NULL) {
    close(fd);
    throw_last(env, "napi_get_uv_event_loop");
    return NULL;
  }
  qh_t *h = (qh_t *)calloc(1, sizeof *h);
  if (h == NULL) {
    close(fd);
    qn_throw_errno(env, "calloc", ENOMEM);
    return NULL;
  }
  h->env = env;
  h->fd = fd;
  h->kind = kind;
  int r = uv_poll_init(loop, &h->poll, fd);
  if (r != 0) {
    close(fd);
    free(h);
    qn_throw_errno(env, "uv_poll_init", -r);
    return NULL;
  }
  h->poll.data = h;
  h->refs = 1;  // the poll handle
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok || napi_wrap(env, obj, h, qh_finalize, NULL, NULL) != napi_ok) {
    h->refs++;
    qh_close(h, 0);
    qh_unref(h);
    throw_last(env, "napi_wrap");
    return NULL;
  }
  h->refs++;  // the wrapper
  return obj;
}

static qh_t *get_handle(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_unwrap(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "not a qnet_sys handle");
    return NULL;
  }
  return (qh_t *)p;
}

static int fill_sun(napi_env env, napi_value v, struct sockaddr_un *sun, socklen_t *sl) {
  size_t n = 0;
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  if (qn_get_string(env, v, sun->sun_path, sizeof sun->sun_path, &n, "path too long") < 0) return -1;
  if (n == 0) {
    qn_throw_errno(env, "empty socket path", EINVAL);
    return -1;
  }
  *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

static napi_value make_int(napi_env env, int32_t v) {
  napi_value r;
  if (napi_create_int32(env, v, &r) != napi_ok) return NULL;
  return r;
}

// ---- open -------------------------------------------------------------------------------

// openUnixDgram(path, bufBytes): a bound unix datagram socket.
static napi_value open_unix_dgram(napi_env env, napi_callback_info ci) {
  napi_value argv[2];
  if (qn_get_args(env, ci, 2, argv) < 0) return NULL;
  struct sockaddr_un sun;
  socklen_t sl;
  if (fill_sun(env, argv[0], &sun, &sl) < 0) return NULL;
  int32_t bufsz = 0;
  CHECK(napi_get_value_int32(env, argv[1], &bufsz));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    qn_throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", errno);
    return NULL;
  }
  if (bufsz > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
  }
  if (bind(fd, (struct sockaddr *)&sun, sl) < 0) {
    int e = errno;
    close(fd);
    char what[160];
    snprintf(what, sizeof what, "bind %s", sun.sun_path);
    qn_throw_errno(env, what, e);
    return NULL;
  }
  return qh_new(env, fd, KIND_UNIX);
}

// openIcmp(family 4|6, raw bool): an ICMP echo socket. A ping socket is bound to a
// kernel-chosen identifier with IP(V6)_RECVERR on; a raw socket (CAP_NET_RAW) sees every ICMP
// message for the host, errors included, and leaves identifiers to the caller.
static napi_value open_icmp(napi_env env, napi_callback_info ci) {
  napi_value argv[2];
  if (qn_get_args(env, ci, 2, argv) < 0) return NULL;
  int32_t fam = 4;
  bool raw = false;
  CHECK(napi_get_value_int32(env, argv[0], &fam));
  CHECK(napi_get_value_bool(env, argv[1], &raw));
  int af = fam == 6 ? AF_INET6 : AF_INET;
  int proto = fam == 6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
  int fd = socket(af, (raw ? SOCK_RAW : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  if (fd < 0) {
    char what[96];
    snprintf(what, sizeof what, "socket(%s, %s, %s)", fam == 6 ? "AF_INET6" : "AF_INET", raw ? "SOCK_RAW" : "SOCK_DGRAM", fam == 6 ? "IPPROTO_ICMPV6" : "IPPROTO_ICMP");
    qn_throw_errno(env, what, errno);
    return NULL;
  }
  int one = 1;
  if (!raw) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = (sa_family_t)af;
    socklen_t sl = fam == 6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
      int e = errno;
      close(fd);
      qn_throw_errno(env, "bind ICMP echo socket", e);
      return NULL;
    }
    // optional: errors just won't show
    if (fam == 6) setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &one, sizeof one);
    else setsockopt(fd, SOL_IP, IP_RECVERR, &one, sizeof one);
  }
  napi_value hv = qh_new(env, fd, KIND_ICMP);
  if (hv == NULL) return NULL;
  void *hp = NULL;
  if (napi_unwrap(env, hv, &hp) == napi_ok && hp != NULL) {
    ((qh_t *)hp)->family = af;
    ((qh_t *)hp)->raw = raw;
  }
  return hv;
}

// openTap(name): [handle, actual name]. name may be "" (kernel picks tapN).
static napi_value open_tap(napi_env env, napi_callback_info ci) {
  napi_value argv[1];
  if (qn_get_args(env, ci, 1, argv) < 0) return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  size_t n = 0;
  if (qn_get_string(env, argv[0], ifr.ifr_name, IFNAMSIZ, &n, "path too long") < 0) return NULL;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    qn_throw_errno(env, "open /dev/net/tun", errno);
    return NULL;
  }
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    char what[64];
    snprintf(what, sizeof what, "TUNSETIFF %s", n ? ifr.ifr_name : "(any)");
    qn_throw_errno(env, what, e);
    return NULL;
  }
  // TUNSETIFF may leave the descriptor flags alone, but be sure.
  if (set_nonblock_cloexec(fd) < 0) {
    int e = errno;
    close(fd);
    qn_throw_errno(env, "fcntl", e);
    return NULL;
  }
  ifr.ifr_name[IFNAMSIZ - 1] = 0;
  napi_value h = qh_new(env, fd, KIND_TAP);
  if (h == NULL) return NULL;
  napi_value arr, name;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &name));
  CHECK(napi_set_element(env, arr, 0, h));
  CHECK(napi_set_element(env, arr, 1, name));
  return arr;
}

// openPacket(ifname, filter: Buffer | null): an AF_PACKET socket bound to one interface.
// filter is a classic BPF program (struct sock_filter[], 8 bytes each), attached before the
// socket is bound so no unfiltered frame is ever queued. Outgoing frames are not delivered.
static napi_value open_packet(napi_env env, napi_callback_info ci) {
  napi_value argv[2];
  if (qn_get_args(env, ci, 2, argv) < 0) return NULL;
  char ifname[IFNAMSIZ];
  size_t n = 0;
  if (qn_get_string(env, argv[0], ifname, sizeof ifname, &n, "path too long") < 0) return NULL;
  napi_valuetype ft;
  void *prog = NULL;
  size_t plen = 0;
  if (napi_typeof(env, argv[1], &ft) != napi_ok) return NULL;
  if (ft != napi_null && ft != napi_undefined) {
    if (napi_get_buffer_info(env, argv[1], &prog, &plen) != napi_ok || plen == 0 || plen % sizeof(struct sock_filter) != 0 ||
        plen / sizeof(struct sock_filter) > 4096) {
      napi_throw_type_error(env, NULL, "filter must be a Buffer of 8-byte BPF instructions");
      return NULL;
    }
  }
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    qn_throw_errno(env, "socket(AF_PACKET)", errno);
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, ifname, n);
  if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
    int e = errno;
    close(fd);
    char what[64];
    snprintf(what, sizeof what, "interface %s", ifname);
    qn_throw_errno(env, what, e);
    return NULL;
  }
  int ifindex = ifr.ifr_ifindex;
  int one = 1;
  setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);  // optional (Linux 4.20)
  if (prog != NULL) {
    struct sock_fprog fp = { (unsigned short)(plen / sizeof(struct sock_filter)), (struct sock_filter *)prog };
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) < 0) {
      int e = errno;
      close(fd);
      qn_throw_errno(env, "SO_ATTACH_FILTER", e);
      return NULL;
    }
  }
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = ifindex;
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
    int e = errno;
    close(fd);
    char what[64];
    snprintf(what, sizeof what, "bind AF_PACKET to %s", ifname);
    qn_throw_errno(env, what, e);
    return NULL;
  }
  return qh_new(env, fd, KIND_PACKET);
}

// ---- receive ----------------------------------------------------------------------------

static void put_info(qh_t *h, int i, size_t off, ssize_t len, uint32_t addr, uint32_t flags, uint32_t orig) {
  uint32_t *e = h->info + (size_t)i * QH_STRIDE;
  e[0] = (uint32_t)off;
  e[1] = len > (ssize_t)UINT32_MAX ? UINT32_MAX : (uint32_t)len;
  e[2] = addr;
  e[3] = flags;
  e[4] = orig;
  memset(e + 5, 0, 32);
}

// The IPv6 peer (and original destination) of entry i.
static void put_info6(qh_t *h, int i, const struct in6_addr *peer, const struct in6_addr *orig) {
  uint32_t *e = h->info + (size_t)i * QH_STRIDE;
  if (peer) memcpy(e + 5, peer, 16);
  if (orig) memcpy(e + 9, orig, 16);
}

// One ICMP error from the error queue into slot i; 1 if stored, 0 if none, -1 on EAGAIN.
static int read_errqueue(qh_t *h, int i, size_t off) {
  struct iovec iov = { h->data + off, h->slot };
  struct sockaddr_storage dst;
  char cbuf[512];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  memset(&dst, 0, sizeof dst);
  msg.msg_name = &dst;
  msg.msg_namelen = sizeof dst;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  ssize_t r = recvmsg(h->fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
  if (r < 0) return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    int v6 = c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR;
    if (!v6 && !(c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR)) continue;
    struct sock_extended_err ee;
    if (c->cmsg_len < CMSG_LEN(sizeof ee)) continue;
    memcpy(&ee, CMSG_DATA(c), sizeof ee);
    if (ee.ee_origin != (v6 ? SO_EE_ORIGIN_ICMP6 : SO_EE_ORIGIN_ICMP)) return 0;
    uint32_t flags = QH_ICMP_ERR | ((uint32_t)ee.ee_type << 8) | ee.ee_code;
    ssize_t len = (msg.msg_flags & MSG_TRUNC) ? (ssize_t)h->slot : r;
    if (v6) {
      struct sockaddr_in6 off6;
      memset(&off6, 0, sizeof off6);
      if (c->cmsg_len >= CMSG_LEN(sizeof ee + sizeof off6)) memcpy(&off6, CMSG_DATA(c) + sizeof ee, sizeof off6);
      const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)&dst;
      put_info(h, i, off, len, 0, flags, 0);
      put_info6(h, i, &off6.sin6_addr, dst.ss_family == AF_INET6 ? &d6->sin6_addr : NULL);
      return 1;
    }
    uint32_t offender = 0;
    if (c->cmsg_len >= CMSG_LEN(sizeof ee + sizeof(struct sockaddr_in))) {
      struct sockaddr_in off_sin;
      memcpy(&off_sin, CMSG_DATA(c) + sizeof ee, sizeof off_sin);
      if (off_sin.sin_family == AF_INET) offender = ntohl(off_sin.sin_addr.s_addr);
    }
    const struct sockaddr_in *d4 = (const struct sockaddr_in *)&dst;
    uint32_t orig = dst.ss_family == AF_INET ? ntohl(d4->sin_addr.s_addr) : 0;
    put_info(h, i, off, len, offender, flags, orig);
    return 1;
  }
  return 0;
}

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  qh_t *h = (qh_t *)p->data;
  if (h->closed || h->cb == NULL || h->data == NULL || h->info == NULL) return;
  napi_env env = h->env;
  int n = 0, err = 0;
  size_t off = 0;
  int max = QH_MAX_BATCH;
  if ((size_t)max * QH_STRIDE > h->info_len) max = (int)(h->info_len / QH_STRIDE);

  // POLLERR stops libuv's poll handle (reported as status UV_EBADF). For ICMP sockets that
  // just means the error queue has entries: drain it below and start polling again.
  if (status < 0) {
    h->polling = 0;
    if (h->kind != KIND_ICMP) err = -status == EBADF ? EIO : -status;
  }
  if (h->kind == KIND_ICMP && !h->raw) {
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);  // clear sk_err
    while (n < max && h->data_len - off >= h->slot) {
      int r = read_errqueue(h, n, off);
      if (r < 0) break;
      if (r == 1) {
        off += h->info[n * QH_STRIDE + 1] < h->slot ? h->info[n * QH_STRIDE + 1] : h->slot;
        n++;
      }
    }
  }

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value senders = NULL, last_sender = NULL;
  char last_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t last_len = (size_t)-1;
  if (h->kind == KIND_UNIX && napi_create_array(env, &senders) != napi_ok) senders = NULL;

  while (err == 0 && n < max && h->data_len - off >= h->slot) {
    union {
      struct sockaddr sa;
      struct sockaddr_un sun;
      struct sockaddr_in sin;
      struct sockaddr_in6 sin6;
    } addr;
    socklen_t al = sizeof addr;
    memset(&addr, 0, sizeof addr);
    ssize_t r;
    if (h->kind == KIND_TAP)
      r = read(h->fd, h->data + off, h->slot);
    else
      r = recvfrom(h->fd, h->data + off, h->slot, MSG_TRUNC | MSG_DONTWAIT, &addr.sa, &al);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (h->kind == KIND_ICMP) break;  // stale sk_err after an ICMP error: not fatal
      err = errno;
      break;
    }
    uint32_t ip = 0;
    if (h->kind == KIND_ICMP && al >= sizeof addr.sin && addr.sin.sin_family == AF_INET)
      ip = ntohl(addr.sin.sin_addr.s_addr);
    size_t skip = 0;
    if (h->kind == KIND_ICMP && h->raw && h->family == AF_INET) {
      // a raw IPv4 socket gets the IP header: describe the ICMP message after it
      size_t got = (size_t)r < h->slot ? (size_t)r : h->slot;
      size_t ihl = got >= 20 ? (size_t)(h->data[off] & 15) * 4 : got;
      skip = ihl <= got ? ihl : got;
    }
    put_info(h, n, off + skip, r - (ssize_t)skip, ip, 0, 0);
    if (h->kind == KIND_ICMP && al >= sizeof addr.sin6 && addr.sin6.sin6_family == AF_INET6)
      put_info6(h, n, &addr.sin6.sin6_addr, NULL);
    if (senders != NULL) {
      napi_value s = NULL;
      size_t plen = 0;
      if (al > offsetof(struct sockaddr_un, sun_path) && addr.sun.sun_path[0] != 0) {
        size_t maxp = (size_t)al - offsetof(struct sockaddr_un, sun_path);
        if (maxp > sizeof addr.sun.sun_path) maxp = sizeof addr.sun.sun_path;
        plen = strnlen(addr.sun.sun_path, maxp);
        if (last_sender != NULL && plen == last_len && memcmp(last_path, addr.sun.sun_path, plen) == 0) {
          s = last_sender;
        } else if (napi_create_string_utf8(env, addr.sun.sun_path, plen, &s) == napi_ok) {
          memcpy(last_path, addr.sun.sun_path, plen);
          last_len = plen;
          last_sender = s;
        } else {
          s = NULL;
        }
      }
      if (s == NULL) napi_get_null(env, &s);
      napi_set_element(env, senders, (uint32_t)n, s);
    }
    off += (size_t)r < h->slot ? (size_t)r : h->slot;
    n++;
  }

  if (n > 0 || err != 0) {
    napi_value cb, argv[3], global, result;
    if (senders == NULL) napi_get_undefined(env, &senders);
    argv[1] = senders;
    if (napi_get_reference_value(env, h->cb, &cb) == napi_ok && cb != NULL &&
        napi_create_int32(env, n, &argv[0]) == napi_ok && napi_create_int32(env, err, &argv[2]) == napi_ok &&
        napi_get_global(env, &global) == napi_ok) {
      napi_status st = napi_make_callback(env, h->actx, global, cb, 3, argv, &result);
      bool pending = false;
      if (st != napi_ok) napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value ex;
        if (napi_get_and_clear_last_exception(env, &ex) == napi_ok) napi_fatal_exception(env, ex);
      }
    }
  }
  napi_close_handle_scope(env, scope);

  // Restart after POLLERR (ICMP error queue), unless JS closed us meanwhile.
  if (!h->closed && !h->polling && h->cb != NULL && err == 0) {
    if (uv_poll_start(&h->poll, UV_READABLE, on_poll) == 0) h->polling = 1;
  }
}

// start(handle, buf: Buffer, info: Uint32Array, slot, cb): begin delivering batches.
static napi_value start(napi_env env, napi_callback_info ci) {
  napi_value argv[5];
  if (qn_get_args(env, ci, 5, argv) < 0) return NULL;
  qh_t *h = get_handle(env, argv[0]);
  if (h == NULL) return NULL;
  if (h->closed) {
    qn_throw_errno(env, "start", EBADF);
    return NULL;
  }
  if (h->cb != NULL) {
    napi_throw_error(env, NULL, "already started");
    return NULL;
  }
  void *data = NULL, *info = NULL;
  size_t data_len = 0, info_len = 0;
  napi_typedarray_type tt;
  napi_value ab;
  size_t boff;
  int32_t slot = 0;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &data_len));
  CHECK(napi_get_typedarray_info(env, argv[2], &tt, &info_len, &info, &ab, &boff));
  CHECK(napi_get_value_int32(env, argv[3], &slot));
  if (tt != napi_uint32_array || info_len < QH_STRIDE || slot <= 0 || (size_t)slot > data_len) {
    napi_throw_range_error(env, NULL, "bad receive buffers");
    return NULL;
  }
  CHECK(napi_create_reference(env, argv[1], 1, &h->data_ref));
  CHECK(napi_create_reference(env, argv[2], 1, &h->info_ref));
  CHECK(napi_create_reference(env, argv[4], 1, &h->cb));
  napi_value name;
  CHECK(napi_create_string_utf8(env, "qnet_sys", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &h->actx));
  h->data = (uint8_t *)data;
  h->data_len = data_len;
  h->info = (uint32_t *)info;
  h->info_len = info_len;
  h->slot = (size_t)slot;
  int r = uv_poll_start(&h->poll, UV_READABLE, on_poll);
  if (r != 0) {
    qn_throw_errno(env, "uv_poll_start", -r);
    return NULL;
  }
  h->polling = 1;
  return NULL;
}

// ---- send -------------------------------------------------------------------------------

static int get_buf(napi_env env, napi_value v, void **p, size_t *n) {
  if (napi_get_buffer_info(env, v, p, n) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return -1;
  }
  return 0;
}

static int send_result(ssize_t r) {
  if (r >= 0) return 0;
  return errno ? errno : EIO;
}

// One datagram (or tap frame) out, retried on EINTR: to `to` with sendto, or with write when NULL.
static int send_one(int fd, const void *p, size_t n, const struct sockaddr *to, socklen_t tl) {
  ssize_t r;
  do r = to ? sendto(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL, to, tl) : write(fd, p, n);
  while (r < 0 && errno == EINTR);
  return send_result(r);
}

// sendUnix(handle, buf, path) -> 0 | errno
static napi_value send_unix(napi_env env, napi_callback_info ci) {
  napi_value argv[3];
  if (qn_get_args(env, ci, 3, argv) < 0) return NULL;
  qh_t *h = get_handle(env, argv[0]);
  if (h == NULL) return NULL;
  void *p;
  size_t n;
  if (get_buf(env, argv[1], &p, &n) < 0) return NULL;
  struct sockaddr_un sun;
  socklen_t sl;
  if (fill_sun(env, argv[2], &sun, &sl) < 0) return NULL;
  if (h->closed || h->kind != KIND_UNIX) return make_int(env, EBADF);
  return make_int(env, send_one(h->fd, p, n, (struct sockaddr *)&sun, sl));
}

// sendIcmp(handle, buf /* ICMP header + data */, dst /* IPv4 u32 host order, or a 16-byte
// Buffer for IPv6 */) -> 0 | errno. A ping socket fills in identifier and checksum; on a raw
// socket the caller's identifier stands (and, for IPv4, its checksum; ICMPv6's is the kernel's).
static napi_value send_icmp(napi_env env, napi_callback_info ci) {
  napi_value argv[3];
  if (qn_get_args(env, ci, 3, argv) < 0) return NULL;
  qh_t *h = get_handle(env, argv[0]);
  if (h == NULL) return NULL;
  void *p;
  size_t n;
  if (get_buf(env, argv[1], &p, &n) < 0) return NULL;
  if (h->closed || h->kind != KIND_ICMP) return make_int(env, EBADF);
  if (n < 8) return make_int(env, EINVAL);
  if (h->family == AF_INET6) {
    void *a;
    size_t an;
    if (get_buf(env, argv[2], &a, &an) < 0) return NULL;
    if (an != 16) return make_int(env, EINVAL);
    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    memcpy(&sin6.sin6_addr, a, 16);
    return make_int(env, send_one(h->fd, p, n, (struct sockaddr *)&sin6, sizeof sin6));
  }
  uint32_t ip;
  CHECK(napi_get_value_uint32(env, argv[2], &ip));
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(ip);
  return make_int(env, send_one(h->fd, p, n, (struct sockaddr *)&sin, sizeof sin));
}

// write(handle, buf) -> 0 | errno  (tap, packet socket)
static napi_value write_fd(napi_env env, napi_callback_info ci) {
  napi_value argv[2];
  if (qn_get_args(env, ci, 2, argv) < 0) return NULL;
  qh_t *h = get_handle(env, argv[0]);
  if (h == NULL) return NULL;
  void *p;
  size_t n;
  if (get_buf(env, argv[1], &p, &n) < 0) return NULL;
  if (h->closed || (h->kind != KIND_TAP && h->kind != KIND_PACKET)) return make_int(env, EBADF);
  return make_int(env, send_one(h->fd, p, n, NULL, 0));
}

// ---- checksum ---------------------------------------------------------------------------

// sum16(buf, off, len, initial) -> the ones' complement sum of buf[off, off+len) as big-endian
// 16-bit words, plus `initial`, folded to 16 bits (not complemented): a partial sum that
// chains like the JS one. Summed as native 32-bit words into a 64-bit accumulator (the
// compiler vectorises it) and byte-swapped at the end, which RFC 1071 2(B) allows.
static napi_value sum16(napi_env env, napi_callback_info ci) {
  napi_value argv[4];
  if (qn_get_args(env, ci, 4, argv) < 0) return NULL;
  void *data;
  size_t blen;
  if (get_buf(env, argv[0], &data, &blen) < 0) return NULL;
  uint32_t off = 0, len = 0;
  double init = 0;
  CHECK(napi_get_value_uint32(env, argv[1], &off));
  CHECK(napi_get_value_uint32(env, argv[2], &len));
  CHECK(napi_get_value_double(env, argv[3], &init));
  if ((size_t)off + len > blen) {
    napi_throw_range_error(env, NULL, "sum16: range outside the buffer");
    return NULL;
  }
  const uint8_t *p = (const uint8_t *)data + off;
  uint64_t s = 0;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    uint32_t w;
    memcpy(&w, p + i, 4);
    s += w;
  }
  if (i + 2 <= len) {
    uint16_t w;
    memcpy(&w, p + i, 2);
    s += w;
    i += 2;
  }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (i < len) s += p[i];  // an odd last byte is the high byte of its word: low byte before the swap
#else
  if (i < len) s += (uint64_t)p[i] << 8;
#endif
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t r = ((s & 0xff) << 8) | (s >> 8);  // native (little-endian) order -> network order
#else
  uint64_t r = s;
#endif
  uint64_t in = init > 0 ? (uint64_t)init : 0;
  r += in;
  while (r >> 16) r = (r & 0xffff) + (r >> 16);
  napi_value v;
  CHECK(napi_create_double(env, (double)r, &v));
  return v;
}

// ---- misc -------------------------------------------------------------------------------

// localPort(handle) -> the bound port (for an ICMP echo socket: the echo identifier)
static napi_value local_port(napi_env env, napi_callback_info ci) {
  napi_value argv[1];
  if (qn_get_args(env, ci, 1, argv) < 0) return NULL;
  qh_t *h = get_handle(env, argv[0]);
  if (h == NULL) return NULL;
  if (h->closed || h->kind != KIND_ICMP || h->raw) return make_int(env, -1);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(h->fd, (struct sockaddr *)&ss, &sl) < 0) return make_int(env, -1);
  if (ss.ss_family == AF_INET6) return make_int(env, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
  return make_int(env, ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

// setRef(handle, bool): whether an active handle keeps the event loop alive
static napi_value set_ref(napi_env env, napi_callback_info ci) {
  napi_value argv[2];
  if (qn_get_args(env, ci, 2, argv) < 0) return NULL;
  qh_t *h = get_handle(env, argv[0]);
  if (h == NULL) return NULL;
  bool on = true;
  CHECK(napi_get_value_bool(env, argv[1], &on));
  if (!h->closed) {
    if (on) uv_ref((uv_handle_t *)&h->poll);
    else uv_unref((uv_handle_t *)&h->poll);
  }
  return NULL;
}

static napi_value close_handle(napi_env env, napi_callback_info ci) {
  napi_value argv[1];
  if (qn_get_args(env, ci, 1, argv) < 0) return NULL;
  qh_t *h = get_handle(env, argv[0]);
  if (h == NULL) return NULL;
  qh_close(h, 0);
  return NULL;
}

// ---- descriptor limit ---------------------------------------------------------------------

static double rlim_num(rlim_t v) { return v == RLIM_INFINITY ? -1.0 : (double)v; }

// raiseNofile() -> [before, soft, hard]: raises the soft RLIMIT_NOFILE to the hard limit
// (RLIM_INFINITY is reported as -1). An unlimited hard limit cannot be the soft limit of
// descriptors; the kernel's ceiling fs.nr_open is used then. Never lowers anything.
static napi_value raise_nofile(napi_env env, napi_callback_info ci) {
  (void)ci;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) { qn_throw_errno(env, "getrlimit(RLIMIT_NOFILE)", errno); return NULL; }
  rlim_t before = rl.rlim_cur;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
    struct rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (want.rlim_cur == RLIM_INFINITY) {
      long nr_open = 0;
      FILE *f = fopen("/proc/sys/fs/nr_open", "r");
      if (f != NULL) { if (fscanf(f, "%ld", &nr_open) != 1) nr_open = 0; fclose(f); }
      want.rlim_cur = nr_open > 0 ? (rlim_t)nr_open : rl.rlim_cur;
    }
    if (want.rlim_cur > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &want) == 0) rl.rlim_cur = want.rlim_cur;
  }
  napi_value arr, v;
  CHECK(napi_create_array_with_length(env, 3, &arr));
  CHECK(napi_create_double(env, rlim_num(before), &v));
  CHECK(napi_set_element(env, arr, 0, v));
  CHECK(napi_create_double(env, rlim_num(rl.rlim_cur), &v));
  CHECK(napi_set_element(env, arr, 1, v));
  CHECK(napi_create_double(env, rlim_num(rl.rlim_max), &v));
  CHECK(napi_set_element(env, arr, 2, v));
  return arr;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "openUnixDgram", NULL, open_unix_dgram, NULL, NULL, NULL, napi_enumerable, NULL },
    { "openIcmp", NULL, open_icmp, NULL, NULL, NULL, napi_enumerable, NULL },
    { "openTap", NULL, open_tap, NULL, NULL, NULL, napi_enumerable, NULL },
    { "openPacket", NULL, open_packet, NULL, NULL, NULL, napi_enumerable, NULL },
    { "start", NULL, start, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sendUnix", NULL, send_unix, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sendIcmp", NULL, send_icmp, NULL, NULL, NULL, napi_enumerable, NULL },
    { "write", NULL, write_fd, NULL, NULL, NULL, napi_enumerable, NULL },
    { "localPort", NULL, local_port, NULL, NULL, NULL, napi_enumerable, NULL },
    { "setRef", NULL, set_ref, NULL, NULL, NULL, napi_enumerable, NULL },
    { "close", NULL, close_handle, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sum16", NULL, sum16, NULL, NULL, NULL, napi_enumerable, NULL },
    { "raiseNofile", NULL, raise_nofile, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_value v;
  if (napi_create_uint32(env, QH_STRIDE, &v) == napi_ok) napi_set_named_property(env, exports, "STRIDE", v);
  if (napi_create_uint32(env, QH_MAX_BATCH, &v) == napi_ok) napi_set_named_property(env, exports, "MAX_BATCH", v);
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  qnet_host_init(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
