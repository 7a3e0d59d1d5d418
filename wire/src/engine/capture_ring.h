// The always-on capture ring of one wire end, written by the engine thread:
// every frame in both directions with the time it was read, bounded in bytes
// (oldest batches dropped first). Its memory is taken when the wire is added,
// so a ring too large for the machine fails that add, never a later frame.
// Readers (snapshots, live follow sessions) take copies under the ring's own
// lock; a live reader that falls behind loses capture data, counted, and
// forwarding never waits for it.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace pw::engine {

struct CaptureFrame {
  const uint8_t* data;  // from the destination MAC on (no virtio-net header)
  uint32_t len;
};

class CaptureRing {
 public:
  // Throws std::bad_alloc when the memory cannot be had.
  explicit CaptureRing(size_t limitBytes);

  // Records one batch (engine thread).
  void Record(const CaptureFrame* frames, int n, bool outbound, uint64_t tsUs);

  // Serialized segments, oldest first: per segment u64 tsUs, u8 outbound,
  // u32 count, u32 length of each frame, then the frames' bytes (little endian).
  std::vector<uint8_t> Snapshot();

  // Live readers: segments recorded after AddReader are queued for the
  // reader up to maxQueueBytes; what does not fit is counted as dropped.
  int AddReader(size_t maxQueueBytes);
  void RemoveReader(int id);
  // Takes what the reader has queued (same serialization as Snapshot) and
  // the frames it lost since the last call; false when the reader is unknown.
  bool Drain(int id, std::vector<uint8_t>* out, uint64_t* dropped);
  bool HasReaders() const { return readers_.load(std::memory_order_relaxed) > 0; }

  size_t limitBytes() const { return limit_; }
  std::atomic<uint64_t> evicted{0};      // frames that fell out of the ring (its normal life)
  std::atomic<uint64_t> readerDrops{0};  // frames live readers could not take

  // Set by the engine: called (engine thread, ring lock not held) when a
  // reader's queue goes from empty to non-empty.
  void (*onReadable)(void* ctx, CaptureRing* ring, int reader) = nullptr;
  void* onReadableCtx = nullptr;

 private:
  // One recorded batch: at buf_[start] its frames' lengths (u32 each), then
  // the frames. Kept inline so recording allocates nothing per batch.
  struct Slot {
    uint64_t tsUs;
    bool outbound;
    uint32_t count;
    size_t start, bytes;  // bytes: lengths and frames
  };
  struct Reader {
    size_t maxBytes;
    std::vector<uint8_t> queued;
    uint64_t dropped = 0;
  };
  void EvictHead();
  void Serialize(std::vector<uint8_t>& out, const Slot& s);

  const size_t limit_;
  std::unique_ptr<uint8_t[]> buf_;
  std::deque<Slot> slots_;
  size_t wpos_ = 0;
  std::mutex mu_;
  std::map<int, Reader> readerMap_;
  std::atomic<int> readers_{0};
  int nextReader_ = 1;
};

}  // namespace pw::engine
