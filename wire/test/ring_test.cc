// The engine's capture ring keeps the newest frames, byte for byte, within its
// limit, and accounts for every frame it lets go (evicted) across laps; live
// readers get their own copies. Built with the sanitizers by
// scripts/build-native-tests.sh and run by test/ring.test.ts; prints one line
// per check ("ok NAME" / "not ok NAME: why") and exits non-zero on a failure.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../src/engine/capture_ring.h"

using pw::engine::CaptureFrame;
using pw::engine::CaptureRing;

namespace {
int failures = 0;
void Check(bool ok, const std::string& name, const std::string& why = "") {
  printf("%s %s%s\n", ok ? "ok" : "not ok", name.c_str(), ok || why.empty() ? "" : (": " + why).c_str());
  if (!ok) failures++;
}

struct Seg {
  uint64_t ts;
  bool outbound;
  std::vector<std::vector<uint8_t>> frames;
};

// Parses the serialization Snapshot and Drain produce.
std::vector<Seg> Parse(const std::vector<uint8_t>& b) {
  std::vector<Seg> out;
  size_t pos = 0;
  while (pos + 13 <= b.size()) {
    Seg s;
    uint32_t n;
    memcpy(&s.ts, &b[pos], 8);
    s.outbound = b[pos + 8] == 1;
    memcpy(&n, &b[pos + 9], 4);
    pos += 13;
    size_t data = pos + 4 * static_cast<size_t>(n);
    for (uint32_t i = 0; i < n; i++) {
      uint32_t l;
      memcpy(&l, &b[pos + 4 * i], 4);
      s.frames.emplace_back(b.begin() + data, b.begin() + data + l);
      data += l;
    }
    pos = data;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::vector<uint8_t>> Frames(const std::vector<Seg>& segs) {
  std::vector<std::vector<uint8_t>> out;
  for (const Seg& s : segs)
    for (const auto& f : s.frames) out.push_back(f);
  return out;
}
}  // namespace

int main() {
  {
    // Random batches: after every one, the ring holds a suffix of everything recorded.
    uint32_t seed = 7;
    auto rnd = [&](uint32_t n) {
      seed = (seed * 1103515245u + 12345u) & 0x7fffffff;
      return seed % n;
    };
    const size_t limit = 64 << 10;
    CaptureRing ring(limit);
    std::vector<std::vector<uint8_t>> all;
    int bad = 0;
    size_t lastHeld = 0;
    for (int b = 0; b < 2000; b++) {
      int count = 1 + rnd(16);
      std::vector<std::vector<uint8_t>> batch;
      for (int i = 0; i < count; i++) {
        uint32_t len = 60 + rnd(b % 50 == 0 ? 9000 : 1500);
        std::vector<uint8_t> f(len);
        uint32_t idx = static_cast<uint32_t>(all.size());
        memcpy(f.data(), &idx, 4);
        for (uint32_t k = 4; k < len; k++) f[k] = static_cast<uint8_t>(idx + k);
        batch.push_back(f);
        all.push_back(f);
      }
      std::vector<CaptureFrame> cf;
      for (auto& f : batch) cf.push_back({f.data(), static_cast<uint32_t>(f.size())});
      ring.Record(cf.data(), count, b % 2 == 0, 1000 + b);
      auto held = Frames(Parse(ring.Snapshot()));
      for (size_t i = 0; i < held.size(); i++)
        if (held[i] != all[all.size() - held.size() + i]) bad++;
      size_t bytes = 0;
      for (auto& f : held) bytes += 4 + f.size();
      if (bytes > limit) bad++;
      if (ring.evicted.load() + held.size() != all.size()) bad++;
      lastHeld = held.size();
    }
    Check(bad == 0, "after every batch: newest frames only, exact bytes, within the limit, every frame accounted for",
          std::to_string(bad) + " bad");
    Check(lastHeld > 0 && ring.evicted.load() > 0, "the ring wrapped many times",
          "held " + std::to_string(lastHeld) + ", evicted " + std::to_string(ring.evicted.load()));
  }
  {
    // A batch larger than the ring keeps its newest frames.
    CaptureRing ring(3100);
    std::vector<std::vector<uint8_t>> fs;
    for (int i = 0; i < 5; i++) fs.emplace_back(1000, static_cast<uint8_t>(i + 1));
    std::vector<CaptureFrame> cf;
    for (auto& f : fs) cf.push_back({f.data(), 1000});
    ring.Record(cf.data(), 5, false, 1);
    auto held = Frames(Parse(ring.Snapshot()));
    std::string firsts;
    for (auto& f : held) firsts += std::to_string(f[0]);
    Check(firsts == "345", "a batch larger than the ring keeps its last three frames", "kept " + firsts);
    Check(ring.evicted.load() == 2, "and counts two evicted", std::to_string(ring.evicted.load()));
  }
  {
    // Live readers get their own copies; a reader over its queue limit loses frames, counted.
    CaptureRing ring(2000);
    int id = ring.AddReader(1 << 20);
    int small = ring.AddReader(1000);
    auto one = [&](uint8_t v) {
      std::vector<uint8_t> b(900, v);
      CaptureFrame f{b.data(), 900};
      ring.Record(&f, 1, true, v);
    };
    one(1);
    auto snap = ring.Snapshot();
    one(2);
    one(3);
    one(4);
    std::vector<uint8_t> got;
    uint64_t dropped = 0;
    ring.Drain(id, &got, &dropped);
    std::string seen;
    for (auto& f : Frames(Parse(got))) seen += std::to_string(f[0]);
    Check(seen == "1234" && dropped == 0, "a live reader gets every batch in order", seen);
    Check(Frames(Parse(snap))[0][0] == 1, "an earlier snapshot is not overwritten");
    std::string now;
    for (auto& f : Frames(Parse(ring.Snapshot()))) now += std::to_string(f[0]);
    Check(now == "34", "the ring itself moved on", now);
    ring.Drain(small, &got, &dropped);
    Check(Frames(Parse(got)).size() == 1 && dropped == 3 && ring.readerDrops.load() == 3,
          "a reader whose queue is full loses frames, counted", "dropped " + std::to_string(dropped));
    ring.RemoveReader(id);
    Check(!ring.Drain(id, &got, &dropped), "a removed reader is gone");
    CaptureRing off(0);
    std::vector<uint8_t> b(10, 1);
    CaptureFrame f{b.data(), 10};
    off.Record(&f, 1, true, 1);
    Check(off.Snapshot().empty(), "a ring of 0 bytes records nothing");
  }
  return failures == 0 ? 0 : 1;
}
