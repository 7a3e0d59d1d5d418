// Link impairments of one wire end in one direction (netem's job, done in the
// engine because this kernel has no sch_netem, and so that they work the same
// for every endpoint kind and across nodes): delay with jitter, loss (random
// or Gilbert-Elliott), duplication, reordering, corruption and a rate limit.
// Frames are copied in, wait in bounded memory, and come out when due; what
// is removed is counted on the end by cause. Engine thread only.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "frame_port.h"

namespace pw::engine {

struct ImpairConfig {
  enum Dist { kUniform = 0, kNormal = 1, kPareto = 2, kParetoNormal = 3 };
  uint64_t delayNs = 0;
  uint64_t jitterNs = 0;
  Dist dist = kUniform;
  double loss = 0;  // probability, 0..1, per frame (used when !gilbertElliott)
  // Gilbert-Elliott (netem's "loss gemodel p r 1-h 1-k"): per frame, the
  // state decides whether it is lost (lossBad in the bad state, lossGood in
  // the good one), then moves: good->bad with p, bad->good with r. Mean
  // burst length in the bad state is 1/r frames.
  bool gilbertElliott = false;
  double geP = 0, geR = 0, geLossBad = 1, geLossGood = 0;
  double duplicate = 0;  // probability of a second copy
  double reorder = 0;    // probability a frame skips the delay (needs a delay)
  double corrupt = 0;    // probability one random bit past the Ethernet header flips
  uint64_t rateBps = 0;     // 0: no rate limit
  uint64_t burstBytes = 0;  // token bucket depth (0: 2 ms at the rate, at least 16 KiB)
  uint64_t limitBytes = 0;  // frames held at once (0: kDefaultLimit)

  static constexpr uint64_t kMaxDelayNs = 60ULL * 1000 * 1000 * 1000;  // a minute
  static constexpr uint64_t kMaxRateBps = 400ULL * 1000 * 1000 * 1000;
  static constexpr uint64_t kMinRateBps = 8000;
  static constexpr uint64_t kDefaultLimit = 8 << 20;
  static constexpr uint64_t kMaxLimit = 256ULL << 20;
  static constexpr uint64_t kMaxBurst = 64ULL << 20;

  // "" when every value is in range; otherwise what is wrong.
  std::string Check() const;
  bool Empty() const;  // nothing to do: frames would pass unchanged
};

class Impairer {
 public:
  Impairer(const ImpairConfig& cfg, EndCounters* counters, uint64_t seed);
  ~Impairer();
  Impairer(const Impairer&) = delete;
  Impairer& operator=(const Impairer&) = delete;

  // New parameters; frames already waiting keep their times (like netem's change).
  void Configure(const ImpairConfig& cfg);
  const ImpairConfig& config() const { return cfg_; }

  // Copies the frames in (vnetHdr, when set, is kVnetHdrLen bytes), drawing
  // loss, corruption, duplication and each copy's delay.
  void Admit(const OutFrame* frames, int n, uint64_t nowNs);
  // Frames due by nowNs, in order, at most maxFrames; all of them when
  // `all`. They stay valid until the next Release or Admit.
  const std::vector<OutFrame>& Release(uint64_t nowNs, size_t maxFrames, bool all);
  // When the next frame is due (UINT64_MAX: none waits).
  uint64_t NextDueNs(uint64_t nowNs);
  bool idle() const { return heap_.empty() && fifo_.empty(); }
  uint64_t heldBytes() const { return held_; }

 private:
  struct Held {
    uint64_t due;
    uint64_t seq;
    uint8_t* buf;  // [virtio-net header if hasVnet][frame]
    uint32_t len;  // frame bytes
    uint32_t wireBytes;  // what the rate limit charges (a GSO super-frame: every segment's headers)
    bool hasVnet;
  };
  struct Later {
    bool operator()(const Held& a, const Held& b) const { return a.due != b.due ? a.due > b.due : a.seq > b.seq; }
  };
  uint64_t Next64();
  double Uniform();  // [0, 1)
  double Normal();
  bool Lose();
  int64_t DelayNs();
  void Push(Held h);
  void FreeReleased();
  uint64_t RateCap() const;
  uint64_t Burst() const;
  uint64_t Limit() const { return cfg_.limitBytes ? cfg_.limitBytes : ImpairConfig::kDefaultLimit; }
  void Refill(uint64_t nowNs);

  ImpairConfig cfg_;
  EndCounters* c_;
  uint64_t rng_[2];
  bool geBad_ = false;
  uint64_t seq_ = 0;
  std::vector<Held> heap_;  // by due time (a min-heap through Later)
  std::deque<Held> fifo_;   // due, waiting for the rate limit's tokens
  uint64_t held_ = 0, fifoBytes_ = 0;
  double tokens_ = 0;
  uint64_t refillNs_ = 0;
  std::vector<Held> released_;
  std::vector<OutFrame> out_;
};

}  // namespace pw::engine
