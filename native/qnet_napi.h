// Helpers both native files of the addon use (qnet_sys.c, qnet_host.c): errors that carry
// the errno as Node's own do ({ code: 'EACCES', errno: 13, message: 'what: strerror' }),
// arguments, and JS strings copied into fixed C buffers. Static: each file gets its own copy at compile time.
#ifndef QNET_NAPI_H
#define QNET_NAPI_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <node_api.h>

static const char *qn_errno_name(int e) {
  switch (e) {
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EADDRINUSE: return "EADDRINUSE";
    case EINVAL: return "EINVAL";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EBUSY: return "EBUSY";
    case ENODEV: return "ENODEV";
    case ENXIO: return "ENXIO";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case ENOTDIR: return "ENOTDIR";
    case EEXIST: return "EEXIST";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    case EBADF: return "EBADF";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENOTSOCK: return "ENOTSOCK";
    default: return "EIO";
  }
}

/** Throw `what: strerror(e)` with code and errno set. */
static void qn_throw_errno(napi_env env, const char *what, int e) {
  char msg[320];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  napi_value m, c, err, n;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok) return;
  if (napi_create_string_utf8(env, qn_errno_name(e), NAPI_AUTO_LENGTH, &c) != napi_ok) return;
  if (napi_create_error(env, c, m, &err) != napi_ok) return;
  if (napi_create_int32(env, e, &n) == napi_ok) napi_set_named_property(env, err, "errno", n);
  napi_throw(env, err);
}

/** A JS string into buf (NUL-terminated), its length in *len; -1 (exception thrown, `too_long` the message when it does not fit) otherwise. */
static int qn_get_string(napi_env env, napi_value v, char *buf, size_t cap, size_t *len, const char *too_long) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a string");
    return -1;
  }
  if (n + 1 > cap) {
    qn_throw_errno(env, too_long, ENAMETOOLONG);
    return -1;
  }
  if (napi_get_value_string_utf8(env, v, buf, cap, &n) != napi_ok) return -1;
  *len = n;
  return 0;
}

/** The call's first `want` arguments into argv; -1 (TypeError thrown) if fewer were given. */
static int qn_get_args(napi_env env, napi_callback_info ci, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, ci, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < want) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return -1;
  }
  return 0;
}

#endif
