{
  "targets": [
    {
      "target_name": "blockhash",
      "sources": ["native/blockhash.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "codecs",
      "sources": ["native/codecs.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "libraries": ["-ldeflate", "-llzma", "-llzo2"]
    },
    {
      "target_name": "fsops",
      "sources": ["native/fsops.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "system",
      "sources": ["native/system.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
