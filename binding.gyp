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
    }
  ]
}
