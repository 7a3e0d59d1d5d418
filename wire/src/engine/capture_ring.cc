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

void CaptureRing::EvictHead() {
  evicted.fetch_add(slots_.front().count, std::memory_order_relaxed);
  slots_.pop_front();
}

void CaptureRing::Record(const CaptureFrame* frames, int n, bool outbound, uint64_t tsUs) {
  if (n <= 0 || limit_ == 0) return;
  size_t total = 0;
  for (int i = 0; i < n; i++) total += 4 + frames[i].len;
  // A batch larger than the whole ring keeps only its newest frames.
  int first = 0;
  while (total > limit_ && first < n) {
    total -= 4 + frames[first++].len;
    evicted.fetch_add(1, std::memory_order_relaxed);
  }
  if (first == n) return;
  const uint32_t count = static_cast<uint32_t>(n - first);
  int notify[8];
  int notifyCount = 0;
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
    uint8_t* lens = buf_.get() + start;
    size_t pos = start + 4 * static_cast<size_t>(count);
    for (int i = first; i < n; i++) {
      uint32_t l = frames[i].len;
      memcpy(lens + 4 * (i - first), &l, 4);
      memcpy(buf_.get() + pos, frames[i].data, l);
      pos += l;
    }
    wpos_ = pos;
    slots_.push_back(Slot{tsUs, outbound, count, start, total});
    for (auto& [id, r] : readerMap_) {
      size_t need = 13 + total;
      if (r.queued.size() + need > r.maxBytes) {
        r.dropped += count;
        readerDrops.fetch_add(count, std::memory_order_relaxed);
        continue;
      }
      bool wasEmpty = r.queued.empty();
      Serialize(r.queued, slots_.back());
      if (wasEmpty && notifyCount < 8) notify[notifyCount++] = id;
    }
  }
  if (onReadable != nullptr)
    for (int i = 0; i < notifyCount; i++) onReadable(onReadableCtx, this, notify[i]);
}

void CaptureRing::Serialize(std::vector<uint8_t>& out, const Slot& s) {
  uint8_t ob = s.outbound ? 1 : 0;
  Put(out, &s.tsUs, 8);
  Put(out, &ob, 1);
  Put(out, &s.count, 4);
  Put(out, buf_.get() + s.start, s.bytes);  // the lengths, then the frames: the same layout
}

std::vector<uint8_t> CaptureRing::Snapshot() {
  std::vector<uint8_t> out;
  std::lock_guard<std::mutex> lock(mu_);
  size_t need = 0;
  for (const Slot& s : slots_) need += 13 + s.bytes;
  out.reserve(need);
  for (const Slot& s : slots_) Serialize(out, s);
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
