// qnet_host: the kernel calls of qnet's host layer (src/host) that Node cannot make.
//
//   createTap(name, opts)            a tap device (TUNSETIFF), optionally with a vnet header,
//                                    an owner/group (TUNSETOWNER/TUNSETGROUP) and persistence
//                                    (TUNSETPERSIST); returns [fd, actual name]. The fd is a
//                                    plain blocking descriptor for handing to QEMU, not polled.
//   tunFeatures()                    TUNGETFEATURES (IFF_VNET_HDR support and friends)
//   sendFds(sock, data, fds)         one sendmsg with SCM_RIGHTS, the rest of data after it
//   unixRequest(path, data, ms)      connect, send, read to EOF, collecting SCM_RIGHTS fds:
//                                    the client side of a fd-passing API request
//   peerCred(sock)                   SO_PEERCRED (pid, uid, gid) + SO_PEERGROUPS (groups)
//   closeFd(fd)
//   fileCapability(path)             the raw security.capability xattr, or null
//
// Limits: at most QH_MAX_FDS descriptors per message; unixRequest reads at most 1 MiB and
// gives up after its timeout (poll-based, so a silent peer cannot hang the caller).
// Descriptors received and not wanted are the caller's to close (they are all returned).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <node_api.h>
#include "qnet_napi.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

#define QH_MAX_FDS 8
#define QH_MAX_RESPONSE (1 << 20)

static int host_string(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t n;
  return qn_get_string(env, v, buf, cap, &n, "name too long");
}

static int32_t host_int_prop(napi_env env, napi_value obj, const char *key, int32_t def) {
  bool has = false;
  napi_value v;
  napi_valuetype t;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return def;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return def;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return def;
  int32_t r = def;
  napi_get_value_int32(env, v, &r);
  return r;
}

static bool host_bool_prop(napi_env env, napi_value obj, const char *key) {
  bool has = false, r = false;
  napi_value v;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return false;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return false;
  if (napi_get_value_bool(env, v, &r) != napi_ok) return false;
  return r;
}

static napi_value host_int(napi_env env, int64_t v) {
  napi_value r;
  if (napi_create_int64(env, v, &r) != napi_ok) return NULL;
  return r;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Wait for `events` on fd until deadline (ms, monotonic); 0 ready, ETIMEDOUT, or errno.
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return ETIMEDOUT;
    struct pollfd p = { fd, events, 0 };
    int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (r > 0) return 0;
    if (r < 0 && errno != EINTR) return errno;
  }
}

// ---- taps ---------------------------------------------------------------------------------

// tunFeatures() -> the IFF_* flags /dev/net/tun supports (TUNGETFEATURES), or throws.
static napi_value tun_features(napi_env env, napi_callback_info ci) {
  (void)ci;
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    qn_throw_errno(env, "open /dev/net/tun", errno);
    return NULL;
  }
  unsigned int features = 0;
  int r = ioctl(fd, TUNGETFEATURES, &features);
  int e = errno;
  close(fd);
  if (r < 0) {
    qn_throw_errno(env, "TUNGETFEATURES", e);
    return NULL;
  }
  return host_int(env, features);
}

// createTap(name, { vnetHdr, owner, group, persist }) -> [fd, name]
// name "" lets the kernel pick (tap%d). The fd is blocking and close-on-exec.
static napi_value create_tap(napi_env env, napi_callback_info ci) {
  napi_value argv[2];
  if (qn_get_args(env, ci, 2, argv) < 0) return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (host_string(env, argv[0], ifr.ifr_name, IFNAMSIZ) < 0) return NULL;
  bool vnet = host_bool_prop(env, argv[1], "vnetHdr");
  bool persist = host_bool_prop(env, argv[1], "persist");
  int32_t owner = host_int_prop(env, argv[1], "owner", -1);
  int32_t group = host_int_prop(env, argv[1], "group", -1);
  if (ifr.ifr_name[0] == 0) snprintf(ifr.ifr_name, IFNAMSIZ, "tap%%d");
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    qn_throw_errno(env, "open /dev/net/tun", errno);
    return NULL;
  }
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  char what[96];
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    snprintf(what, sizeof what, "TUNSETIFF %s", ifr.ifr_name);
    qn_throw_errno(env, what, e);
    return NULL;
  }
  ifr.ifr_name[IFNAMSIZ - 1] = 0;
  if ((owner >= 0 && ioctl(fd, TUNSETOWNER, (unsigned long)owner) < 0) ||
      (group >= 0 && ioctl(fd, TUNSETGROUP, (unsigned long)group) < 0) ||
      (persist && ioctl(fd, TUNSETPERSIST, 1UL) < 0)) {
    int e = errno;
    close(fd);
    snprintf(what, sizeof what, "configure tap %s (owner/group/persist)", ifr.ifr_name);
    qn_throw_errno(env, what, e);
    return NULL;
  }
  napi_value arr, name;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_set_element(env, arr, 0, host_int(env, fd)) != napi_ok || napi_set_element(env, arr, 1, name) != napi_ok) {
    close(fd);
    return NULL;
  }
  return arr;
}

// ---- descriptor passing --------------------------------------------------------------------

static int get_fd_list(napi_env env, napi_value v, int *fds, size_t *n) {
  uint32_t len = 0;
  bool isArr = false;
  if (napi_is_array(env, v, &isArr) != napi_ok || !isArr || napi_get_array_length(env, v, &len) != napi_ok || len > QH_MAX_FDS) {
    napi_throw_type_error(env, NULL, "expected an array of at most 8 file descriptors");
    return -1;
  }
  for (uint32_t i = 0; i < len; i++) {
    napi_value e;
    int32_t fd = -1;
    if (napi_get_element(env, v, i, &e) != napi_ok || napi_get_value_int32(env, e, &fd) != napi_ok || fd < 0) {
      napi_throw_type_error(env, NULL, "bad file descriptor in the list");
      return -1;
    }
    fds[i] = fd;
  }
  *n = len;
  return 0;
}

// sendFds(sock, data: Buffer, fds: number[], timeoutMs) -> 0 | errno
// The descriptors ride on the first byte(s); the rest of data follows. Works on blocking and
// non-blocking sockets (waits for room up to timeoutMs).
static napi_value send_fds(napi_env env, napi_callback_info ci) {
  napi_value argv[4];
  if (qn_get_args(env, ci, 4, argv) < 0) return NULL;
  int32_t sock = -1, timeout = 0;
  void *p = NULL;
  size_t n = 0, nfds = 0;
  int fds[QH_MAX_FDS];
  if (napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_buffer_info(env, argv[1], &p, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "sendFds(sock, Buffer, fds, timeoutMs)");
    return NULL;
  }
  if (get_fd_list(env, argv[2], fds, &nfds) < 0) return NULL;
  napi_get_value_int32(env, argv[3], &timeout);
  if (n == 0) return host_int(env, EINVAL);
  int64_t deadline = now_ms() + (timeout > 0 ? timeout : 5000);
  size_t off = 0;
  bool first = true;
  while (off < n) {
    char cbuf[CMSG_SPACE(sizeof(int) * QH_MAX_FDS)];
    struct iovec iov = { (uint8_t *)p + off, n - off };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    memset(cbuf, 0, sizeof cbuf);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (first && nfds > 0) {
      msg.msg_control = cbuf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t r = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        int w = wait_fd(sock, POLLOUT, deadline);
        if (w != 0) return host_int(env, w);
        continue;
      }
      return host_int(env, errno);
    }
    first = false;
    off += (size_t)r;
  }
  return host_int(env, 0);
}

// unixRequest(path, data: Buffer, timeoutMs) -> { data: Buffer, fds: number[] }
// Connects to a unix stream socket, sends data, reads until EOF. Throws on connect/IO errors
// and on timeout (ETIMEDOUT), closing any descriptors received so far.
static napi_value unix_request(napi_env env, napi_callback_info ci) {
  napi_value argv[3];
  if (qn_get_args(env, ci, 3, argv) < 0) return NULL;
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (host_string(env, argv[0], sun.sun_path, sizeof sun.sun_path) < 0) return NULL;
  void *p = NULL;
  size_t n = 0;
  int32_t timeout = 0;
  if (napi_get_buffer_info(env, argv[1], &p, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "unixRequest(path, Buffer, timeoutMs)");
    return NULL;
  }
  napi_get_value_int32(env, argv[2], &timeout);
  int64_t deadline = now_ms() + (timeout > 0 ? timeout : 30000);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) {
    qn_throw_errno(env, "socket(AF_UNIX)", errno);
    return NULL;
  }
  int fds[QH_MAX_FDS * 4];
  size_t nfds = 0;
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  int err = 0;
  const char *stage = "connect";
  if (connect(s, (struct sockaddr *)&sun, sizeof sun) < 0) {
    if (errno == EINPROGRESS || errno == EAGAIN) {
      err = wait_fd(s, POLLOUT, deadline);
      if (err == 0) {
        socklen_t sl = sizeof err;
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &sl);
      }
    } else {
      err = errno;
    }
  }
  size_t off = 0;
  if (err == 0) stage = "send";
  while (err == 0 && off < n) {
    ssize_t r = send(s, (uint8_t *)p + off, n - off, MSG_NOSIGNAL);
    if (r >= 0) { off += (size_t)r; continue; }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) { err = wait_fd(s, POLLOUT, deadline); continue; }
    err = errno;
  }
  if (err == 0) stage = "receive";
  while (err == 0) {
    if (len == cap) {
      if (cap >= QH_MAX_RESPONSE) { err = EMSGSIZE; break; }
      size_t ncap = cap ? cap * 2 : 4096;
      uint8_t *nb = realloc(buf, ncap);
      if (nb == NULL) { err = ENOMEM; break; }
      buf = nb;
      cap = ncap;
    }
    char cbuf[CMSG_SPACE(sizeof(int) * QH_MAX_FDS)];
    struct iovec iov = { buf + len, cap - len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t r = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) { err = wait_fd(s, POLLIN, deadline); continue; }
      err = errno;
      break;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (nfds < sizeof fds / sizeof fds[0]) fds[nfds++] = fd;
        else close(fd);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) { err = EMSGSIZE; break; }
    if (r == 0) break;
    len += (size_t)r;
  }
  close(s);
  if (err != 0) {
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    free(buf);
    char what[160];
    snprintf(what, sizeof what, "%s %s", stage, sun.sun_path);
    qn_throw_errno(env, what, err);
    return NULL;
  }
  napi_value obj, data, list;
  void *dst = NULL;
  if (napi_create_object(env, &obj) != napi_ok || napi_create_buffer_copy(env, len, len ? buf : (void *)"", &dst, &data) != napi_ok ||
      napi_create_array_with_length(env, nfds, &list) != napi_ok) {
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    free(buf);
    return NULL;
  }
  free(buf);
  for (size_t i = 0; i < nfds; i++) napi_set_element(env, list, (uint32_t)i, host_int(env, fds[i]));
  napi_set_named_property(env, obj, "data", data);
  napi_set_named_property(env, obj, "fds", list);
  return obj;
}

// peerCred(sock) -> { pid, uid, gid, groups }  (groups: SO_PEERGROUPS; [] if unsupported)
static napi_value peer_cred(napi_env env, napi_callback_info ci) {
  napi_value argv[1];
  if (qn_get_args(env, ci, 1, argv) < 0) return NULL;
  int32_t sock = -1;
  if (napi_get_value_int32(env, argv[0], &sock) != napi_ok) {
    napi_throw_type_error(env, NULL, "peerCred(fd)");
    return NULL;
  }
  struct ucred uc;
  socklen_t sl = sizeof uc;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &sl) < 0) {
    qn_throw_errno(env, "SO_PEERCRED", errno);
    return NULL;
  }
  gid_t groups[256];
  socklen_t gl = sizeof groups;
  int ng = 0;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups, &gl) == 0) ng = (int)(gl / sizeof(gid_t));
  napi_value obj, list;
  if (napi_create_object(env, &obj) != napi_ok || napi_create_array_with_length(env, (size_t)ng, &list) != napi_ok) return NULL;
  napi_set_named_property(env, obj, "pid", host_int(env, uc.pid));
  napi_set_named_property(env, obj, "uid", host_int(env, uc.uid));
  napi_set_named_property(env, obj, "gid", host_int(env, uc.gid));
  for (int i = 0; i < ng; i++) napi_set_element(env, list, (uint32_t)i, host_int(env, groups[i]));
  napi_set_named_property(env, obj, "groups", list);
  return obj;
}

// closeFd(fd) -> 0 | errno
static napi_value close_fd(napi_env env, napi_callback_info ci) {
  napi_value argv[1];
  if (qn_get_args(env, ci, 1, argv) < 0) return NULL;
  int32_t fd = -1;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return host_int(env, EBADF);
  return host_int(env, close(fd) == 0 ? 0 : errno);
}

// fileCapability(path) -> Buffer (raw vfs_cap_data) | null when the file has none
static napi_value file_capability(napi_env env, napi_callback_info ci) {
  napi_value argv[1];
  if (qn_get_args(env, ci, 1, argv) < 0) return NULL;
  char path[4096];
  if (host_string(env, argv[0], path, sizeof path) < 0) return NULL;
  uint8_t buf[64];
  ssize_t r = getxattr(path, "security.capability", buf, sizeof buf);
  napi_value out;
  if (r < 0) {
    if (errno == ENODATA || errno == ENOTSUP) {
      napi_get_null(env, &out);
      return out;
    }
    qn_throw_errno(env, path, errno);
    return NULL;
  }
  void *dst = NULL;
  if (napi_create_buffer_copy(env, (size_t)r, buf, &dst, &out) != napi_ok) return NULL;
  return out;
}

void qnet_host_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "tunFeatures", NULL, tun_features, NULL, NULL, NULL, napi_enumerable, NULL },
    { "createTap", NULL, create_tap, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sendFds", NULL, send_fds, NULL, NULL, NULL, napi_enumerable, NULL },
    { "unixRequest", NULL, unix_request, NULL, NULL, NULL, napi_enumerable, NULL },
    { "peerCred", NULL, peer_cred, NULL, NULL, NULL, napi_enumerable, NULL },
    { "closeFd", NULL, close_fd, NULL, NULL, NULL, napi_enumerable, NULL },
    { "fileCapability", NULL, file_capability, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
