#include "capture_ring.h"

#include <string.h>

#include <new>

namespace pw::engine {

namespace {
void Put(std::vector<uint8_t>& out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}
}  // namespace

CaptureRing::CaptureRing(size_t limitBytes) : limit_(limitBytes) {
  if (limit_ > 0) {
    // Reserved now (a size the machine cannot back fails this add), but its
    // pages are touched only as frames arrive: an idle wire end costs no RSS.
    buf_.reset(new uint8_t[limit_]);
  }
}

void CaptureRing::Serialize(std::vector<uint8_t>& out, uint64_t tsUs, bool outbound, const uint32_t* lens, uint32_t n,
                            const uint8_t* data, size_t bytes) {
  uint8_t ob = outbound ? 1 : 0;
  Put(out, &tsUs, 8);
  Put(out, &ob, 1);
  Put(out, &n, 4);
  Put(out, lens, static_cast<size_t>(n) * 4);
  Put(out, data, bytes);
}

void CaptureRing::EvictHead() {
  evicted.fetch_add(slots_.front().lens.size(), std::memory_order_relaxed);
  slots_.pop_front();
}

void CaptureRing::Record(const CaptureFrame* frames, int n, bool outbound, uint64_t tsUs) {
  if (n <= 0 || limit_ == 0) return;
  size_t total = 0;
  for (int i = 0; i < n; i++) total += frames[i].len;
  // A batch larger than the whole ring keeps only its newest frames.
  int first = 0;
  while (total > limit_ && first < n) {
    total -= frames[first++].len;
    evicted.fetch_add(1, std::memory_order_relaxed);
  }
  if (first == n) return;
  std::vector<int> notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (wpos_ + total > limit_) {
      // The tail is too short: start over at 0. Slots still in the tail are
      // the oldest (previous lap), so FIFO order holds.
      while (!slots_.empty() && slots_.front().start >= wpos_) EvictHead();
      wpos_ = 0;
    }
    size_t start = wpos_;
    while (!slots_.empty()) {
      const Slot& h = slots_.front();
      if (h.start < start + total && h.start + h.bytes > start) EvictHead();
      else break;
    }
    Slot s{tsUs, outbound, start, total, {}};
    s.lens.reserve(n - first);
    size_t pos = start;
    for (int i = first; i < n; i++) {
      memcpy(buf_.get() + pos, frames[i].data, frames[i].len);
      pos += frames[i].len;
      s.lens.push_back(frames[i].len);
    }
    wpos_ = pos;
    for (auto& [id, r] : readerMap_) {
      size_t need = 13 + s.lens.size() * 4 + total;
      if (r.queued.size() + need > r.maxBytes) {
        r.dropped += s.lens.size();
        readerDrops.fetch_add(s.lens.size(), std::memory_order_relaxed);
        continue;
      }
      bool wasEmpty = r.queued.empty();
      Serialize(r.queued, tsUs, outbound, s.lens.data(), static_cast<uint32_t>(s.lens.size()), buf_.get() + start, total);
      if (wasEmpty) notify.push_back(id);
    }
    slots_.push_back(std::move(s));
  }
  if (onReadable != nullptr)
    for (int id : notify) onReadable(onReadableCtx, this, id);
}

std::vector<uint8_t> CaptureRing::Snapshot() {
  std::vector<uint8_t> out;
  std::lock_guard<std::mutex> lock(mu_);
  size_t need = 0;
  for (const Slot& s : slots_) need += 13 + s.lens.size() * 4 + s.bytes;
  out.reserve(need);
  for (const Slot& s : slots_)
    Serialize(out, s.tsUs, s.outbound, s.lens.data(), static_cast<uint32_t>(s.lens.size()), buf_.get() + s.start, s.bytes);
  return out;
}

int CaptureRing::AddReader(size_t maxQueueBytes) {
  std::lock_guard<std::mutex> lock(mu_);
  int id = nextReader_++;
  readerMap_[id] = Reader{maxQueueBytes, {}, 0};
  readers_.store(static_cast<int>(readerMap_.size()), std::memory_order_relaxed);
  return id;
}

void CaptureRing::RemoveReader(int id) {
  std::lock_guard<std::mutex> lock(mu_);
  readerMap_.erase(id);
  readers_.store(static_cast<int>(readerMap_.size()), std::memory_order_relaxed);
}

bool CaptureRing::Drain(int id, std::vector<uint8_t>* out, uint64_t* dropped) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = readerMap_.find(id);
  if (it == readerMap_.end()) return false;
  out->swap(it->second.queued);
  it->second.queued.clear();
  it->second.queued.shrink_to_fit();
  *dropped = it->second.dropped;
  it->second.dropped = 0;
  return true;
}

}  // namespace pw::engine
