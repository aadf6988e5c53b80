{
  "targets": [
    {
      "target_name": "qnet_sys",
      "sources": ["native/qnet_sys.c", "native/qnet_host.c"],
      "cflags": ["-Wall", "-Wextra", "-O2", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
