{
  "targets": [
    {
      "target_name": "nftables_napi",
      "sources": ["csrc/nft_runner.c", "csrc/nl_exchange.c", "csrc/binding.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "cflags_cc": ["-Wall", "-Wextra", "-O2"],
      "libraries": ["<!@(pkg-config --libs libnftables)"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
