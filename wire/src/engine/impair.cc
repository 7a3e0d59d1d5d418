// The impairment pipeline of one wire end and direction (see impair.h):
// admit (loss, corruption, duplication, delay per copy) -> a heap by due
// time -> the rate limit's FIFO (token bucket) -> out.
#include "impair.h"

#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace pw::engine {

namespace {
constexpr size_t kVnet = FramePort::kVnetHdrLen;
constexpr uint32_t kEthHdr = 14;

bool Prob(double p) { return p >= 0 && p <= 1 && !std::isnan(p); }
}  // namespace

std::string ImpairConfig::Check() const {
  if (delayNs > kMaxDelayNs) return "delay is over 60 s";
  if (jitterNs > kMaxDelayNs) return "jitter is over 60 s";
  if (dist < kUniform || dist > kParetoNormal) return "unknown jitter distribution";
  if (!Prob(loss)) return "loss must be 0 to 100%";
  if (!Prob(geP) || !Prob(geR) || !Prob(geLossBad) || !Prob(geLossGood)) return "loss burst parameters must be 0 to 100%";
  if (gilbertElliott && geR <= 0 && geP > 0) return "loss burst: r (bad -> good) must be over 0%, or bursts never end";
  if (!Prob(duplicate)) return "duplicate must be 0 to 100%";
  if (!Prob(reorder)) return "reorder must be 0 to 100%";
  if (!Prob(corrupt)) return "corrupt must be 0 to 100%";
  if (reorder > 0 && delayNs == 0) return "reorder needs a delay (reordered frames skip it, the others wait)";
  if (rateBps != 0 && (rateBps < kMinRateBps || rateBps > kMaxRateBps)) return "rate must be 8 kbit/s to 400 Gbit/s";
  if (burstBytes > kMaxBurst) return "burst is over 64 MiB";
  if (burstBytes != 0 && rateBps == 0) return "burst needs a rate";
  if (limitBytes != 0 && (limitBytes < (64 << 10) || limitBytes > kMaxLimit)) return "limit must be 64 KiB to 256 MiB";
  return "";
}

bool ImpairConfig::Empty() const {
  return delayNs == 0 && jitterNs == 0 && loss == 0 && !(gilbertElliott && (geP > 0 || geLossGood > 0)) &&
         duplicate == 0 && reorder == 0 && corrupt == 0 && rateBps == 0;
}

Impairer::Impairer(const ImpairConfig& cfg, EndCounters* counters, uint64_t seed) : cfg_(cfg), c_(counters) {
  // splitmix64 spreads any seed (a counter, the clock) over both state words.
  auto mix = [](uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  rng_[0] = mix(seed);
  rng_[1] = mix(seed) | 1;
  tokens_ = static_cast<double>(Burst());
}

Impairer::~Impairer() {
  FreeReleased();
  for (Held& h : heap_) free(h.buf);
  for (Held& h : fifo_) free(h.buf);
}

void Impairer::Configure(const ImpairConfig& cfg) {
  bool rateChanged = cfg.rateBps != cfg_.rateBps || cfg.burstBytes != cfg_.burstBytes;
  cfg_ = cfg;
  if (rateChanged) tokens_ = static_cast<double>(Burst());
  if (!cfg_.gilbertElliott) geBad_ = false;
}

// xorshift128+: fast, and good enough for drawing losses and delays.
uint64_t Impairer::Next64() {
  uint64_t s1 = rng_[0];
  const uint64_t s0 = rng_[1];
  rng_[0] = s0;
  s1 ^= s1 << 23;
  rng_[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
  return rng_[1] + s0;
}

double Impairer::Uniform() { return static_cast<double>(Next64() >> 11) * (1.0 / 9007199254740992.0); }

double Impairer::Normal() {
  // Box-Muller; u1 in (0, 1] so the log is finite.
  double u1 = 1.0 - Uniform(), u2 = Uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

bool Impairer::Lose() {
  if (!cfg_.gilbertElliott) return cfg_.loss > 0 && Uniform() < cfg_.loss;
  // As netem's gemodel: the state before the move decides the frame.
  bool lost = Uniform() < (geBad_ ? cfg_.geLossBad : cfg_.geLossGood);
  if (geBad_) {
    if (Uniform() < cfg_.geR) geBad_ = false;
  } else if (Uniform() < cfg_.geP) {
    geBad_ = true;
  }
  return lost;
}

// The delay of one copy: the set delay plus a draw of the jitter
// distribution scaled to a standard deviation of `jitter` (uniform: spread
// evenly over delay +- jitter, as netem), never below zero.
int64_t Impairer::DelayNs() {
  double d = static_cast<double>(cfg_.delayNs);
  if (cfg_.jitterNs > 0) {
    double j = static_cast<double>(cfg_.jitterNs), x = 0;
    // Pareto with shape 3 (finite variance) moved to mean 0 and scaled to sd 1.
    auto pareto = [&] {
      const double xm = 2.0 / std::sqrt(3.0);
      double u = 1.0 - Uniform();
      return xm / std::cbrt(u) - 1.5 * xm;
    };
    switch (cfg_.dist) {
      case ImpairConfig::kUniform: x = 2 * Uniform() - 1; break;
      case ImpairConfig::kNormal: x = Normal(); break;
      case ImpairConfig::kPareto: x = pareto(); break;
      case ImpairConfig::kParetoNormal: x = (0.25 * Normal() + 0.75 * pareto()) / 0.7905694150420949; break;
    }
    d += j * x;
  }
  if (d < 0) d = 0;
  if (d > static_cast<double>(ImpairConfig::kMaxDelayNs) * 2) d = static_cast<double>(ImpairConfig::kMaxDelayNs) * 2;
  return static_cast<int64_t>(d);
}

uint64_t Impairer::Burst() const {
  if (cfg_.burstBytes) return cfg_.burstBytes;
  return std::max<uint64_t>(16 << 10, cfg_.rateBps / 8 / 500);
}

// Frames waiting for the rate limit: about 100 ms at the rate, at least
// 64 KiB, within the end's limit. Past it they count as rate_limited (a
// shaper's tail drop).
uint64_t Impairer::RateCap() const {
  return std::min<uint64_t>(Limit(), std::max<uint64_t>(64 << 10, cfg_.rateBps / 8 / 10));
}

void Impairer::Push(Held h) {
  heap_.push_back(h);
  std::push_heap(heap_.begin(), heap_.end(), Later());
}

void Impairer::Admit(const OutFrame* frames, int n, uint64_t nowNs) {
  const uint64_t limit = Limit();
  for (int i = 0; i < n; i++) {
    const OutFrame& f = frames[i];
    if (Lose()) {
      c_->Add(c_->impairedLoss, 1);
      continue;
    }
    int copies = 1;
    if (cfg_.duplicate > 0 && Uniform() < cfg_.duplicate) {
      copies = 2;
      c_->Add(c_->impairDuplicated, 1);  // counted whether or not the copy fits (then it is an overflow)
    }
    // Charged to the rate limit as the segments it becomes on a wire.
    uint32_t wireBytes = f.len;
    if (f.vnetHdr != nullptr && f.vnetHdr[1] != 0) {
      uint16_t hdrLen, gsoSize;
      memcpy(&hdrLen, f.vnetHdr + 2, 2);
      memcpy(&gsoSize, f.vnetHdr + 4, 2);
      if (gsoSize > 0 && hdrLen < f.len) {
        uint64_t segs = (f.len - hdrLen + gsoSize - 1) / gsoSize;
        wireBytes = static_cast<uint32_t>(std::min<uint64_t>(UINT32_MAX, f.len + (segs - 1) * hdrLen));
      }
    }
    for (int k = 0; k < copies; k++) {
      if (held_ + f.len > limit) {
        c_->Add(c_->impairOverflow, 1);
        continue;
      }
      size_t hv = f.vnetHdr ? kVnet : 0;
      auto* buf = static_cast<uint8_t*>(malloc(hv + f.len + 1));
      if (buf == nullptr) {
        c_->Add(c_->impairOverflow, 1);
        continue;
      }
      if (hv) memcpy(buf, f.vnetHdr, kVnet);
      memcpy(buf + hv, f.data, f.len);
      if (k == 0 && cfg_.corrupt > 0 && f.len > kEthHdr && Uniform() < cfg_.corrupt) {
        uint64_t bit = Next64() % (static_cast<uint64_t>(f.len - kEthHdr) * 8);
        buf[hv + kEthHdr + bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
        c_->Add(c_->impairCorrupted, 1);
      }
      uint64_t due = nowNs;
      if (cfg_.reorder > 0 && Uniform() < cfg_.reorder) c_->Add(c_->impairReordered, 1);
      else due = nowNs + static_cast<uint64_t>(DelayNs());
      held_ += f.len;
      Push({due, seq_++, buf, f.len, wireBytes, hv != 0});
    }
  }
}

void Impairer::FreeReleased() {
  for (Held& h : released_) free(h.buf);
  released_.clear();
  out_.clear();
}

// An idle link saves up at most the burst. A backlogged one (frames waited
// in the FIFO since the last refill) is owed the whole elapsed time, up to
// what waits: the engine thread woken late (a busy machine) must not cost the
// link its rate, as a late timer costs netem nothing either.
void Impairer::Refill(uint64_t nowNs) {
  if (cfg_.rateBps == 0) return;
  if (nowNs > refillNs_) {
    double add = static_cast<double>(nowNs - refillNs_) * static_cast<double>(cfg_.rateBps) / 8e9;
    double cap = static_cast<double>(Burst()) + static_cast<double>(fifoBytes_);
    tokens_ = std::min(cap, tokens_ + add);
    refillNs_ = nowNs;
  }
}

const std::vector<OutFrame>& Impairer::Release(uint64_t nowNs, size_t maxFrames, bool all) {
  FreeReleased();
  auto emit = [&](const Held& h) {
    released_.push_back(h);
    const uint8_t* vh = h.hasVnet ? h.buf : nullptr;
    out_.push_back({vh, h.buf + (h.hasVnet ? kVnet : 0), h.len});
    held_ -= h.len;
  };
  // Before the due frames join the FIFO, so only frames that already waited
  // earn the catch-up credit.
  Refill(nowNs);
  // Due frames leave the heap: straight out, or into the rate limit's queue.
  while (!heap_.empty() && (all || heap_.front().due <= nowNs) && out_.size() < maxFrames) {
    std::pop_heap(heap_.begin(), heap_.end(), Later());
    Held h = heap_.back();
    heap_.pop_back();
    if (cfg_.rateBps == 0 || all) {
      emit(h);
    } else if (fifoBytes_ + h.len > RateCap()) {
      c_->Add(c_->rateLimited, 1);
      held_ -= h.len;
      free(h.buf);
    } else {
      fifoBytes_ += h.len;
      fifo_.push_back(h);
    }
  }
  // A frame goes when the bucket holds its size (or the whole burst, for a
  // frame bigger than the burst); the bucket may go below zero, so the
  // long-run rate stays exact whatever the frame sizes.
  while (!fifo_.empty() && out_.size() < maxFrames) {
    const Held& h = fifo_.front();
    double need = std::min(static_cast<double>(h.wireBytes), static_cast<double>(Burst()));
    if (!all && cfg_.rateBps != 0 && tokens_ < need) break;
    tokens_ -= h.wireBytes;
    fifoBytes_ -= h.len;
    emit(h);
    fifo_.pop_front();
  }
  return out_;
}

uint64_t Impairer::NextDueNs(uint64_t nowNs) {
  uint64_t next = std::numeric_limits<uint64_t>::max();
  if (!heap_.empty()) next = heap_.front().due;
  if (!fifo_.empty()) {
    if (cfg_.rateBps == 0) return nowNs;
    const Held& h = fifo_.front();
    double need = std::min(static_cast<double>(h.wireBytes), static_cast<double>(Burst())) - tokens_;
    uint64_t wait = need <= 0 ? 0 : static_cast<uint64_t>(std::ceil(need * 8e9 / static_cast<double>(cfg_.rateBps)));
    next = std::min(next, refillNs_ + wait);
  }
  return next;
}

}  // namespace pw::engine
