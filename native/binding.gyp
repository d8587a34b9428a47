{
  "targets": [
    {
      "target_name": "relaygate_records",
      "sources": ["records.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
