{
  "targets": [
    {
      "target_name": "patchwire_wire",
      "sources": ["src/addon.cc", "src/port.cc", "src/netns.cc", "src/netlink.cc", "src/engine_binding.cc", "src/engine/engine.cc",
                  "src/engine/frame_port.cc", "src/engine/capture_ring.cc", "src/engine/carrier.cc", "src/engine/codec.cc", "src/engine/impair.cc", "src/x509.cc", "src/x509_parse.cc"],
      "libraries": ["-lnghttp2"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
