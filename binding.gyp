{
  "targets": [
    {
      "target_name": "blockhash",
      "sources": ["native/blockhash.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
