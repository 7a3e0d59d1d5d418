// A line-oriented driver of the engine's codec, so test/codec-native.test.ts can
// cross-check it against the TypeScript codec with many cases per process.
// Each stdin line is one command; each gets one stdout line (JSON or hex).
// Byte strings travel as hex, "-" standing for an empty one:
//   batch <maxFrames> <maxFrameLen> <hex>   -> {"ok","node","frames":[{"wire","hdr"|null,"data"}],"error"?}
//   encode <wire>:<hdrhex|->:<datahex|->[,...] -> hex of the Frame entries (a SubscribeResponse)
//   hello <nodehex>                           -> hex
//   request <maxLen> <hex>                    -> {"ok","node","lab","error"?}
//   encode-request <nodehex> <labhex>         -> hex
//   stream <maxMessage> <cut,cut,...|-> <hex> -> {"ok","idle","msgs":[hex],"status"?,"error"?}
//   pct-encode <hex> / pct-decode <hex>       -> hex
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "../src/engine/codec.h"

using namespace pw::engine;
using Bytes = std::vector<uint8_t>;

static std::string Hex(const uint8_t* p, size_t n) {
  static const char d[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; i++) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}
static std::string Hex(const std::string& s) { return Hex(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }
static std::string Hex(const Bytes& b) { return Hex(b.data(), b.size()); }

static bool Unhex(const std::string& s, Bytes* out) {
  out->clear();
  if (s == "-") return true;
  if (s.size() % 2) return false;
  auto v = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); i += 2) {
    int hi = v(s[i]), lo = v(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<uint8_t>(hi * 16 + lo));
  }
  return true;
}

static std::string Json(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<uint8_t>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

static std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) parts.push_back(cur);
  return parts;
}

static bool OnMessage(void* ctx, const uint8_t* msg, size_t len) {
  static_cast<std::vector<std::string>*>(ctx)->push_back(len ? Hex(msg, len) : "");
  return true;
}

static std::string Run(const std::string& line) {
  std::istringstream in(line);
  std::string cmd;
  in >> cmd;
  Bytes buf;
  if (cmd == "batch") {
    size_t maxFrames;
    uint32_t maxFrameLen;
    std::string hex;
    in >> maxFrames >> maxFrameLen >> hex;
    if (!in || !Unhex(hex, &buf)) return "{\"usage\":true}";
    std::vector<FrameRef> frames;
    std::string node, err;
    // A copy of exactly the message's size, so ASan sees any read past it.
    Bytes exact(buf);
    bool ok = DecodeBatch(exact.data(), exact.size(), {maxFrames, maxFrameLen}, frames, &node, &err);
    std::string o = std::string("{\"ok\":") + (ok ? "true" : "false") + ",\"node\":\"" + Hex(node) + "\",\"frames\":[";
    for (size_t i = 0; i < frames.size(); i++) {
      const FrameRef& f = frames[i];
      o += (i ? "," : "") + std::string("{\"wire\":\"") + std::to_string(f.wire) + "\",\"hdr\":" +
           (f.vnetHdr ? "\"" + Hex(f.vnetHdr, kVnetHdrLen) + "\"" : "null") + ",\"data\":\"" + Hex(f.data, f.len) + "\"}";
    }
    o += "]";
    if (!ok) o += ",\"error\":" + Json(err);
    return o + "}";
  }
  if (cmd == "encode") {
    std::string spec;
    in >> spec;
    Bytes out;
    for (const std::string& f : Split(spec, ',')) {
      std::vector<std::string> p = Split(f, ':');
      Bytes hdr, data;
      if (p.size() != 3 || !Unhex(p[1], &hdr) || !Unhex(p[2], &data) || (!hdr.empty() && hdr.size() != kVnetHdrLen)) return "usage";
      uint64_t wire = std::stoull(p[0]);
      const uint8_t* h = hdr.empty() ? nullptr : hdr.data();
      size_t at = out.size();
      out.resize(at + EncodedFrameSize(wire, h && VnetHdrMatters(h), static_cast<uint32_t>(data.size())));
      uint8_t* end = EncodeFrame(out.data() + at, wire, h, data.data(), static_cast<uint32_t>(data.size()));
      if (end != out.data() + out.size()) return "size-mismatch";
    }
    return Hex(out);
  }
  if (cmd == "hello") {
    std::string hex;
    in >> hex;
    if (!Unhex(hex, &buf)) return "usage";
    return Hex(EncodeHelloResponse(std::string(buf.begin(), buf.end())));
  }
  if (cmd == "request") {
    size_t maxLen;
    std::string hex;
    in >> maxLen >> hex;
    if (!in || !Unhex(hex, &buf)) return "{\"usage\":true}";
    SubscribeRequest r;
    std::string err;
    Bytes exact(buf);
    bool ok = DecodeSubscribeRequest(exact.data(), exact.size(), maxLen, &r, &err);
    std::string o = std::string("{\"ok\":") + (ok ? "true" : "false") + ",\"node\":\"" + Hex(r.node) + "\",\"lab\":\"" + Hex(r.lab) + "\"";
    if (!ok) o += ",\"error\":" + Json(err);
    return o + "}";
  }
  if (cmd == "encode-request") {
    std::string n, l;
    Bytes nb, lb;
    in >> n >> l;
    if (!in || !Unhex(n, &nb) || !Unhex(l, &lb)) return "usage";
    return Hex(EncodeSubscribeRequest({std::string(nb.begin(), nb.end()), std::string(lb.begin(), lb.end())}));
  }
  if (cmd == "stream") {
    size_t maxMessage;
    std::string cutSpec, hex;
    in >> maxMessage >> cutSpec >> hex;
    if (!in || !Unhex(hex, &buf)) return "{\"usage\":true}";
    std::vector<size_t> cuts;
    if (cutSpec != "-")
      for (const std::string& c : Split(cutSpec, ',')) cuts.push_back(std::stoul(c));
    cuts.push_back(buf.size());
    MessageReader r(maxMessage);
    std::vector<std::string> msgs;
    bool ok = true;
    size_t prev = 0;
    for (size_t cut : cuts) {
      if (cut < prev || cut > buf.size()) return "{\"usage\":true}";
      Bytes chunk(buf.begin() + prev, buf.begin() + cut);
      prev = cut;
      if (!r.Push(chunk.data(), chunk.size(), OnMessage, &msgs)) {
        ok = false;
        break;
      }
    }
    std::string o = std::string("{\"ok\":") + (ok ? "true" : "false") + ",\"idle\":" + (r.idle() ? "true" : "false") + ",\"msgs\":[";
    for (size_t i = 0; i < msgs.size(); i++) o += (i ? ",\"" : "\"") + msgs[i] + "\"";
    o += "]";
    if (!ok) o += ",\"status\":" + std::to_string(r.status()) + ",\"error\":" + Json(r.error());
    return o + "}";
  }
  if (cmd == "pct-encode" || cmd == "pct-decode") {
    std::string hex;
    in >> hex;
    if (!Unhex(hex, &buf)) return "usage";
    std::string s(buf.begin(), buf.end());
    return Hex(cmd == "pct-encode" ? PercentEncode(s) : PercentDecode(s));
  }
  return "unknown-command";
}

int main() {
  std::ios::sync_with_stdio(false);
  std::string line;
  while (std::getline(std::cin, line)) std::cout << Run(line) << '\n';
  std::cout.flush();
  return 0;
}
