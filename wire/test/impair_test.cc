// Unit checks of the impairment pipeline (wire/src/engine/impair.cc), built
// with ASan and UBSan by scripts/build-native-tests.sh and run by
// test/impair-native.test.ts. Time is simulated (the Impairer takes "now"
// from its caller), so the checks are exact, not timed. Each prints
// "ok NAME" or "not ok NAME: why".
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../src/engine/impair.h"

using namespace pw::engine;

namespace {
int failures = 0;
void Check(bool ok, const std::string& name, const std::string& why = "") {
  if (ok) std::printf("ok %s\n", name.c_str());
  else {
    std::printf("not ok %s: %s\n", name.c_str(), why.c_str());
    failures++;
  }
}
uint64_t L(const std::atomic<uint64_t>& a) { return a.load(); }

std::vector<uint8_t> Frame(uint32_t len, uint8_t seed) {
  std::vector<uint8_t> f(len);
  for (uint32_t i = 0; i < len; i++) f[i] = static_cast<uint8_t>(seed + i * 7);
  return f;
}

// Releases everything due up to `until`, stepping `stepNs`; returns the frames' copies.
std::vector<std::vector<uint8_t>> Drain(Impairer& im, uint64_t from, uint64_t until, uint64_t stepNs, uint64_t* lastAt = nullptr) {
  std::vector<std::vector<uint8_t>> out;
  for (uint64_t t = from; t <= until; t += stepNs) {
    for (;;) {
      const auto& r = im.Release(t, 64, false);
      if (r.empty()) break;
      for (const OutFrame& f : r) out.emplace_back(f.data, f.data + f.len);
      if (lastAt) *lastAt = t;
    }
  }
  return out;
}
}  // namespace

int main() {
  {
    ImpairConfig c;
    c.loss = std::numeric_limits<double>::quiet_NaN();
    bool nan = !c.Check().empty();
    c = ImpairConfig{};
    c.reorder = 0.1;
    bool reorder = !c.Check().empty();
    c = ImpairConfig{};
    c.rateBps = 10;
    bool rate = !c.Check().empty();
    c = ImpairConfig{};
    c.limitBytes = 1ULL << 40;
    bool limit = !c.Check().empty();
    c = ImpairConfig{};
    c.delayNs = ImpairConfig::kMaxDelayNs + 1;
    bool delay = !c.Check().empty();
    Check(nan && reorder && rate && limit && delay, "out-of-range configs are refused",
          std::to_string(nan) + std::to_string(reorder) + std::to_string(rate) + std::to_string(limit) + std::to_string(delay));
    Check(ImpairConfig{}.Empty() && ImpairConfig{}.Check().empty(), "an empty config is valid and does nothing");
  }
  {
    EndCounters c;
    ImpairConfig cfg;
    cfg.delayNs = 10'000'000;
    Impairer im(cfg, &c, 1);
    std::vector<std::vector<uint8_t>> in;
    for (int i = 0; i < 10; i++) in.push_back(Frame(100 + i, static_cast<uint8_t>(i)));
    std::vector<OutFrame> of;
    for (auto& f : in) of.push_back({nullptr, f.data(), static_cast<uint32_t>(f.size())});
    im.Admit(of.data(), 10, 1000);
    bool early = im.Release(1000 + 9'999'999, 64, false).empty();
    Check(early, "delay: nothing leaves before it is due");
    Check(im.NextDueNs(1000) == 1000 + 10'000'000, "delay: the next due time is the admit time plus the delay");
    auto out = Drain(im, 1000 + 10'000'000, 1000 + 10'000'000, 1);
    Check(out == in, "delay: all leave when due, in order, byte for byte");
    Check(im.idle() && im.heldBytes() == 0, "delay: nothing held after");
  }
  {
    EndCounters c;
    ImpairConfig cfg;
    cfg.loss = 1.0;
    Impairer im(cfg, &c, 2);
    auto f = Frame(60, 1);
    OutFrame of{nullptr, f.data(), 60};
    for (int i = 0; i < 100; i++) im.Admit(&of, 1, 0);
    Check(L(c.impairedLoss) == 100 && im.Release(0, 64, false).empty(), "loss 100%: every frame counted as impaired_loss");
  }
  {
    EndCounters c;
    ImpairConfig cfg;
    cfg.corrupt = 1.0;
    Impairer im(cfg, &c, 3);
    bool ok = true;
    std::string why;
    for (int i = 0; i < 200; i++) {
      auto f = Frame(64 + i, static_cast<uint8_t>(i));
      OutFrame of{nullptr, f.data(), static_cast<uint32_t>(f.size())};
      im.Admit(&of, 1, 0);
      const auto& r = im.Release(0, 64, false);
      if (r.size() != 1) {
        ok = false;
        why = "not released";
        break;
      }
      int bits = 0, first = -1;
      for (size_t k = 0; k < f.size(); k++) {
        int d = __builtin_popcount(f[k] ^ r[0].data[k]);
        if (d && first < 0) first = static_cast<int>(k);
        bits += d;
      }
      if (bits != 1 || first < 14) {
        ok = false;
        why = "bits " + std::to_string(bits) + " at byte " + std::to_string(first);
        break;
      }
    }
    Check(ok && L(c.impairCorrupted) == 200, "corrupt: exactly one bit flips, past the Ethernet header", why);
  }
  {
    EndCounters c;
    ImpairConfig cfg;
    cfg.duplicate = 1.0;
    Impairer im(cfg, &c, 4);
    auto f = Frame(80, 9);
    OutFrame of{nullptr, f.data(), 80};
    im.Admit(&of, 1, 0);
    auto out = Drain(im, 0, 0, 1);
    Check(out.size() == 2 && out[0] == f && out[1] == f && L(c.impairDuplicated) == 1, "duplicate: two identical copies");
  }
  {
    EndCounters c;
    ImpairConfig cfg;
    cfg.delayNs = 50'000'000;
    cfg.reorder = 0.5;
    Impairer im(cfg, &c, 5);
    auto f = Frame(80, 9);
    OutFrame of{nullptr, f.data(), 80};
    for (int i = 0; i < 1000; i++) im.Admit(&of, 1, 0);
    size_t now = Drain(im, 0, 0, 1).size();
    Check(now == L(c.impairReordered) && now > 400 && now < 600, "reorder 50%: that share leaves at once, the rest waits",
          std::to_string(now) + " of 1000");
  }
  {
    // A byte cap: the heap never holds more than the limit; the rest is counted.
    EndCounters c;
    ImpairConfig cfg;
    cfg.delayNs = 1'000'000'000;
    cfg.limitBytes = 64 << 10;
    Impairer im(cfg, &c, 6);
    auto f = Frame(1000, 1);
    OutFrame of{nullptr, f.data(), 1000};
    for (int i = 0; i < 100; i++) im.Admit(&of, 1, 0);
    Check(im.heldBytes() <= (64u << 10) && L(c.impairOverflow) == 100 - im.heldBytes() / 1000, "limit: held bytes bounded, overflow counted");
  }
  {
    // Rate: over 10 simulated seconds at 1 Mbit/s, what leaves is the rate
    // times the time plus at most the bucket.
    EndCounters c;
    ImpairConfig cfg;
    cfg.rateBps = 1'000'000;
    cfg.limitBytes = 64 << 20;
    Impairer im(cfg, &c, 7);
    auto f = Frame(1250, 1);
    OutFrame of{nullptr, f.data(), 1250};
    uint64_t bytes = 0;
    for (uint64_t t = 0; t <= 10'000'000'000ULL; t += 1'000'000) {
      for (int k = 0; k < 2; k++) im.Admit(&of, 1, t);  // 20 Mbit/s offered
      for (;;) {
        const auto& r = im.Release(t, 64, false);
        if (r.empty()) break;
        for (auto& x : r) bytes += x.len;
      }
    }
    double bits = bytes * 8.0, want = 10e6;
    Check(std::fabs(bits - want) <= 16384 * 8 + 1250 * 8, "rate: 1 Mbit/s for 10 s carries 10 Mbit (within one bucket)",
          std::to_string(bits));
    Check(L(c.rateLimited) > 0, "rate: what its queue cannot hold is counted as rate_limited");
  }
  {
    // Rate with a late engine: 100 Mbit/s, 200 offered, but Release runs only
    // every 10 ms (5x the 2 ms burst), as on a busy machine. A backlogged
    // link is owed the time it waited, so 2 s still carry 200 Mbit.
    EndCounters c;
    ImpairConfig cfg;
    cfg.rateBps = 100'000'000;
    Impairer im(cfg, &c, 9);
    auto f = Frame(1500, 1);
    OutFrame of{nullptr, f.data(), 1500};
    uint64_t bytes = 0;
    for (uint64_t t = 0; t < 2'000'000'000ULL; t += 10'000'000) {
      for (int k = 0; k < 167; k++) im.Admit(&of, 1, t);  // 200 Mbit/s offered
      for (;;) {
        const auto& r = im.Release(t, 64, false);
        if (r.empty()) break;
        for (auto& x : r) bytes += x.len;
      }
    }
    double bits = bytes * 8.0, want = 199e6 + 25000 * 8;  // owed up to the last step (1.99 s), plus the first burst
    Check(std::fabs(bits - want) <= 0.01 * want, "rate: an engine woken every 10 ms still carries the rate (100 Mbit/s for 2 s)",
          std::to_string(bits));
    // ... and an idle link saves up only its burst: after 1 s of silence,
    // one release sends at most the burst (25 kB) plus one frame.
    uint64_t quiet = 3'000'000'000ULL, burst = 0;
    while (!im.idle()) im.Release(quiet, 64, true);
    for (int k = 0; k < 100; k++) im.Admit(&of, 1, 4'000'000'000ULL);
    for (;;) {
      const auto& r = im.Release(4'000'000'000ULL, 64, false);
      if (r.empty()) break;
      for (auto& x : r) burst += x.len;
    }
    Check(burst <= 25'000 + 1500 && burst >= 25'000 - 1500, "rate: an idle link's saved credit is the burst, no more",
          std::to_string(burst));
  }
  {
    // Gilbert-Elliott: loss p/(p+r) on average, bursts of 1/r frames.
    EndCounters c;
    ImpairConfig cfg;
    cfg.gilbertElliott = true;
    cfg.geP = 0.01;
    cfg.geR = 0.25;
    Impairer im(cfg, &c, 8);
    auto f = Frame(60, 1);
    OutFrame of{nullptr, f.data(), 60};
    uint64_t bursts = 0, lost = 0;
    bool inBurst = false;
    const int n = 1'000'000;
    for (int i = 0; i < n; i++) {
      uint64_t before = L(c.impairedLoss);
      im.Admit(&of, 1, 0);
      bool l = L(c.impairedLoss) != before;
      if (l && !inBurst) bursts++;
      inBurst = l;
      lost += l;
      im.Release(0, 64, false);
    }
    double share = static_cast<double>(lost) / n, want = 0.01 / 0.26;
    double meanBurst = static_cast<double>(lost) / static_cast<double>(bursts);
    Check(std::fabs(share - want) / want < 0.1, "Gilbert-Elliott: loss within 10% of p/(p+r)", std::to_string(share));
    Check(std::fabs(meanBurst - 4.0) / 4.0 < 0.1, "Gilbert-Elliott: mean burst within 10% of 1/r", std::to_string(meanBurst));
  }
  {
    // Jitter: the added delay's standard deviation is the setting (normal).
    EndCounters c;
    ImpairConfig cfg;
    cfg.delayNs = 100'000'000;
    cfg.jitterNs = 5'000'000;
    cfg.dist = ImpairConfig::kNormal;
    Impairer im(cfg, &c, 9);
    auto f = Frame(60, 1);
    OutFrame of{nullptr, f.data(), 60};
    for (int i = 0; i < 20000; i++) im.Admit(&of, 1, 0);
    std::vector<double> at;
    for (uint64_t t = 0; t <= 200'000'000; t += 100'000) {
      for (;;) {
        const auto& r = im.Release(t, 64, false);
        if (r.empty()) break;
        for (size_t k = 0; k < r.size(); k++) at.push_back(static_cast<double>(t));
      }
    }
    double m = 0, v = 0;
    for (double x : at) m += x;
    m /= static_cast<double>(at.size());
    for (double x : at) v += (x - m) * (x - m);
    double sd = std::sqrt(v / static_cast<double>(at.size()));
    Check(at.size() == 20000 && std::fabs(sd - 5e6) / 5e6 < 0.05 && std::fabs(m - 1e8) < 2e5, "jitter normal: mean delay and standard deviation as set",
          std::to_string(m) + " " + std::to_string(sd));
  }
  {
    // Everything at once, with random configs, lengths and virtio-net headers
    // (GSO fields of any value): every admitted frame is released or counted.
    uint64_t s = 12345;
    auto rnd = [&] {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      return s;
    };
    bool ok = true;
    std::string why;
    for (int round = 0; round < 300 && ok; round++) {
      EndCounters c;
      ImpairConfig cfg;
      cfg.delayNs = rnd() % 3 ? rnd() % 50'000'000 : 0;
      cfg.jitterNs = rnd() % 2 ? rnd() % 20'000'000 : 0;
      cfg.dist = static_cast<ImpairConfig::Dist>(rnd() % 4);
      cfg.loss = (rnd() % 100) / 400.0;
      cfg.gilbertElliott = rnd() % 4 == 0;
      cfg.geP = (rnd() % 100) / 100.0;
      cfg.geR = (rnd() % 100 + 1) / 101.0;
      cfg.duplicate = (rnd() % 100) / 200.0;
      cfg.reorder = cfg.delayNs ? (rnd() % 100) / 200.0 : 0;
      cfg.corrupt = (rnd() % 100) / 100.0;
      cfg.rateBps = rnd() % 2 ? 8000 + rnd() % 1'000'000'000 : 0;
      cfg.limitBytes = rnd() % 2 ? (64 << 10) + rnd() % (1 << 20) : 0;
      if (!cfg.Check().empty()) continue;
      Impairer im(cfg, &c, rnd());
      uint64_t admitted = 0, released = 0, t = 0;
      std::vector<uint8_t> buf(70000), vh(10);
      for (int b = 0; b < 50; b++) {
        int n = 1 + static_cast<int>(rnd() % 64);
        std::vector<OutFrame> of;
        for (int k = 0; k < n; k++) {
          uint32_t len = 1 + static_cast<uint32_t>(rnd() % (rnd() % 8 ? 1600 : 65000));
          for (auto& x : vh) x = static_cast<uint8_t>(rnd());
          of.push_back({rnd() % 2 ? vh.data() : nullptr, buf.data(), len});
        }
        im.Admit(of.data(), n, t);
        admitted += n;
        if (im.heldBytes() > (cfg.limitBytes ? cfg.limitBytes : ImpairConfig::kDefaultLimit)) {
          ok = false;
          why = "held over the limit";
        }
        t += rnd() % 5'000'000;
        for (;;) {
          const auto& r = im.Release(t, 64, false);
          if (r.empty()) break;
          released += r.size();
        }
      }
      // Clearing releases whatever is left at once.
      for (;;) {
        const auto& r = im.Release(t, 64, true);
        if (r.empty()) break;
        released += r.size();
      }
      uint64_t dropped = L(c.impairedLoss) + L(c.rateLimited) + L(c.impairOverflow);
      if (admitted + L(c.impairDuplicated) != released + dropped || !im.idle() || im.heldBytes() != 0) {
        ok = false;
        why = "round " + std::to_string(round) + ": admitted " + std::to_string(admitted) + " + dup " + std::to_string(L(c.impairDuplicated)) +
              " != released " + std::to_string(released) + " + dropped " + std::to_string(dropped);
      }
    }
    Check(ok, "random configs and frames: admitted + duplicated = released + dropped, bounded memory", why);
  }
  return failures ? 1 : 0;
}
