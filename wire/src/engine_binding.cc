// The Engine as JavaScript sees it: configure (wires, peers through wires,
// TLS material, ring sizes) and read (counters, peer state, health, capture
// snapshots and live readers), always in batches, never once per frame.
#include "engine_binding.h"

#include "engine/engine.h"

namespace pw {

namespace {
std::string Str(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
}
std::string Pem(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (v.IsBuffer()) {
    auto b = v.As<Napi::Buffer<char>>();
    return std::string(b.Data(), b.Length());
  }
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
}
double Num(const Napi::Object& o, const char* k, double def) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : def;
}
Napi::Value Throw(Napi::Env env, const std::string& msg) {
  Napi::Error::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}
}  // namespace

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {InstanceMethod("addWire", &EngineWrap::AddWire), InstanceMethod("removeWire", &EngineWrap::RemoveWire),
                        InstanceMethod("counters", &EngineWrap::Counters), InstanceMethod("peerUp", &EngineWrap::PeerUp),
                        InstanceMethod("carrierRevision", &EngineWrap::CarrierRevision),
                        InstanceMethod("setCable", &EngineWrap::SetCable), InstanceMethod("carrier", &EngineWrap::CarrierOf),
                        InstanceMethod("peers", &EngineWrap::Peers), InstanceMethod("health", &EngineWrap::Health),
                        InstanceMethod("setTls", &EngineWrap::SetTls),
                        InstanceMethod("setImpair", &EngineWrap::SetImpair),
                        InstanceMethod("ringSnapshot", &EngineWrap::RingSnapshot),
                        InstanceMethod("ringReaderAdd", &EngineWrap::RingReaderAdd),
                        InstanceMethod("ringReaderDrain", &EngineWrap::RingReaderDrain),
                        InstanceMethod("ringReaderRemove", &EngineWrap::RingReaderRemove),
                        InstanceMethod("close", &EngineWrap::Close), InstanceAccessor("port", &EngineWrap::Port, nullptr)});
  }

  // new Engine({node, lab, listenHost, listenPort, tls?: {cert, key, ca}, maxQueueBytes?,
  //             highWaterBytes?, keepaliveMs?, connectTimeoutMs?}, onCapture(readerId))
  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "Engine(options, onCapture)").ThrowAsJavaScriptException();
      return;
    }
    auto o = info[0].As<Napi::Object>();
    engine::EngineOptions eo;
    eo.node = Str(o, "node");
    eo.lab = Str(o, "lab");
    eo.listenHost = Str(o, "listenHost");
    eo.listenPort = static_cast<int>(Num(o, "listenPort", 0));
    eo.maxQueueBytes = static_cast<size_t>(Num(o, "maxQueueBytes", static_cast<double>(eo.maxQueueBytes)));
    eo.highWaterBytes = static_cast<size_t>(Num(o, "highWaterBytes", static_cast<double>(eo.highWaterBytes)));
    eo.keepaliveMs = static_cast<uint32_t>(Num(o, "keepaliveMs", eo.keepaliveMs));
    eo.connectTimeoutMs = static_cast<uint32_t>(Num(o, "connectTimeoutMs", eo.connectTimeoutMs));
    eo.portRcvBufBytes = static_cast<int>(Num(o, "portRcvBufBytes", eo.portRcvBufBytes));
    eo.maxPendingPerHost = static_cast<int>(Num(o, "maxPendingPerHost", eo.maxPendingPerHost));
    eo.maxConns = static_cast<int>(Num(o, "maxConnections", eo.maxConns));
    eo.carrierHoldMs = static_cast<uint32_t>(Num(o, "carrierHoldMs", eo.carrierHoldMs));
    if (o.Get("tls").IsObject()) {
      auto t = o.Get("tls").As<Napi::Object>();
      eo.tls = true;
      eo.tlsCert = Pem(t, "cert");
      eo.tlsKey = Pem(t, "key");
      eo.tlsCa = Pem(t, "ca");
    }
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "patchwire-engine", 0, 1);
    tsfn_.Unref(env);  // capture readers must not keep the process alive
    auto tsfn = tsfn_;
    engine_ = std::make_unique<engine::Engine>(eo, [tsfn](int reader) mutable {
      tsfn.NonBlockingCall([reader](Napi::Env env, Napi::Function fn) { fn.Call({Napi::Number::New(env, reader)}); });
    });
    std::string err = engine_->Start(&port_);
    if (!err.empty()) {
      engine_.reset();
      tsfn_.Release();
      Napi::Error::New(env, err).ThrowAsJavaScriptException();
    }
  }

  ~EngineWrap() override {
    if (engine_) {
      engine_->Stop();
      tsfn_.Release();
    }
  }

 private:
  bool Alive(Napi::Env env) {
    if (engine_) return true;
    Napi::Error::New(env, "engine is closed").ThrowAsJavaScriptException();
    return false;
  }

  Napi::Value Port(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), port_); }

  // addWire({uid, ringBytes, peerNode?, peerAddress?, segment?, segmentPeers?, ends: [{name, fd, kind, vnetHdr, slotSize, slots, maxFrame}]})
  Napi::Value AddWire(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsObject()) return Throw(env, "addWire(config)");
    auto o = info[0].As<Napi::Object>();
    engine::WireConfig cfg;
    double uid = Num(o, "uid", -1);
    if (!(uid > 0) || uid > 9007199254740991.0) return Throw(env, "addWire: uid must be a positive safe integer");
    cfg.uid = static_cast<uint64_t>(uid);
    double ring = Num(o, "ringBytes", 0);
    if (ring < 0 || ring > static_cast<double>(1ULL << 32)) return Throw(env, "addWire: ringBytes must be 0 to 4 GiB");
    cfg.ringBytes = static_cast<size_t>(ring);
    cfg.peerNode = Str(o, "peerNode");
    cfg.peerAddress = Str(o, "peerAddress");
    double hold = Num(o, "carrierHoldMs", 0);
    if (hold < 0 || hold > 3600000) return Throw(env, "addWire: carrierHoldMs must be 0 to 3600000");
    cfg.carrierHoldMs = static_cast<uint32_t>(hold);
    // segment: true, segmentPeers: [{node, address}] (a shared segment; ends are its members here)
    cfg.segment = o.Has("segment") && o.Get("segment").ToBoolean();
    if (o.Has("segmentPeers") && o.Get("segmentPeers").IsArray()) {
      auto sp = o.Get("segmentPeers").As<Napi::Array>();
      if (sp.Length() > engine::kMaxSegmentPeers) return Throw(env, "addWire: too many segment peers");
      for (uint32_t i = 0; i < sp.Length(); i++) {
        if (!sp.Get(i).IsObject()) return Throw(env, "addWire: each segment peer is an object");
        auto po = sp.Get(i).As<Napi::Object>();
        cfg.segmentPeers.push_back({Str(po, "node"), Str(po, "address")});
      }
    }
    if (!o.Get("ends").IsArray()) return Throw(env, "addWire: ends must be an array");
    auto ends = o.Get("ends").As<Napi::Array>();
    for (uint32_t i = 0; i < ends.Length(); i++) {
      if (!ends.Get(i).IsObject()) return Throw(env, "addWire: each end is an object");
      auto e = ends.Get(i).As<Napi::Object>();
      engine::EndConfig ec;
      ec.name = Str(e, "name");
      ec.fd = static_cast<int>(Num(e, "fd", -1));
      std::string kind = Str(e, "kind");
      if (kind != "packet" && kind != "tap") return Throw(env, "addWire: end kind must be 'packet' or 'tap'");
      ec.tap = kind == "tap";
      ec.vnet = e.Get("vnetHdr").ToBoolean();
      ec.slotSize = static_cast<int>(Num(e, "slotSize", 0));
      ec.slots = static_cast<int>(Num(e, "slots", 64));
      ec.maxFrame = static_cast<uint32_t>(Num(e, "maxFrame", 1522));
      // carrier: 'veth' (host end ifindex carrierIfindex), 'tap', or 'none'
      std::string car = Str(e, "carrier");
      ec.carrier = car == "veth" ? engine::CarrierHow::kVethHost : car == "tap" ? engine::CarrierHow::kTap : engine::CarrierHow::kNone;
      ec.carrierIfindex = static_cast<int>(Num(e, "carrierIfindex", 0));
      if (ec.carrier == engine::CarrierHow::kVethHost && ec.carrierIfindex <= 0) return Throw(env, "addWire: a veth end needs carrierIfindex");
      if (ec.carrier == engine::CarrierHow::kTap && !ec.tap) return Throw(env, "addWire: tap carrier on a non-tap end");
      ec.plugged = !e.Has("plugged") || e.Get("plugged").ToBoolean();
      ec.restored = e.Get("restored").ToBoolean();
      if (ec.fd < 0) return Throw(env, "addWire: end fd must be an open file descriptor");
      if (ec.slotSize < 256 || ec.slotSize > (1 << 20) || ec.slots < 1 || ec.slots > 1024)
        return Throw(env, "addWire: slotSize must be 256 B to 1 MiB and slots 1 to 1024");
      cfg.ends.push_back(ec);
    }
    std::string err = engine_->AddWire(cfg);
    if (!err.empty()) return Throw(env, err);
    return env.Undefined();
  }

  Napi::Value RemoveWire(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    return Napi::Boolean::New(env, engine_->RemoveWire(static_cast<uint64_t>(info[0].ToNumber().DoubleValue())));
  }

  // setImpair(uid, end, 'in' | 'out', cfg | null): cfg in the units of
  // src/native/wire.ts (EngineImpair). Returns "" or why not.
  Napi::Value SetImpair(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsString())
      return Throw(env, "setImpair(uid, end, dir, cfg)");
    uint64_t uid = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
    int end = info[1].As<Napi::Number>().Int32Value();
    std::string d = info[2].As<Napi::String>().Utf8Value();
    int dir = d == "in" ? engine::Engine::kImpairIn : d == "out" ? engine::Engine::kImpairOut : -1;
    if (dir < 0) return Napi::String::New(env, "direction must be in or out, not '" + d.substr(0, 16) + "'");
    if (!info[3].IsObject()) return Napi::String::New(env, engine_->SetImpair(uid, end, dir, nullptr));
    Napi::Object o = info[3].As<Napi::Object>();
    std::string err;
    // Bounded before any cast: NaN, negatives and huge values are refused here.
    auto u64 = [&](const char* k, double max) -> uint64_t {
      double v = Num(o, k, 0);
      if (!(v >= 0 && v <= max)) {
        if (err.empty()) err = std::string(k) + " out of range";
        return 0;
      }
      return static_cast<uint64_t>(v);
    };
    auto pct = [&](const Napi::Object& from, const char* k, double def) -> double {
      double v = Num(from, k, def);
      if (!(v >= 0 && v <= 100)) {
        if (err.empty()) err = std::string(k) + " must be 0 to 100 (percent)";
        return 0;
      }
      return v / 100.0;
    };
    engine::ImpairConfig cfg;
    cfg.delayNs = u64("delayUs", 120e6) * 1000;
    cfg.jitterNs = u64("jitterUs", 120e6) * 1000;
    std::string dist = Str(o, "jitterDist");
    if (dist.empty() || dist == "uniform") cfg.dist = engine::ImpairConfig::kUniform;
    else if (dist == "normal") cfg.dist = engine::ImpairConfig::kNormal;
    else if (dist == "pareto") cfg.dist = engine::ImpairConfig::kPareto;
    else if (dist == "paretonormal") cfg.dist = engine::ImpairConfig::kParetoNormal;
    else err = "jitter distribution must be uniform, normal, pareto or paretonormal";
    cfg.loss = pct(o, "lossPercent", 0);
    Napi::Value ge = o.Get("lossBurst");
    if (ge.IsObject()) {
      Napi::Object g = ge.As<Napi::Object>();
      cfg.gilbertElliott = true;
      cfg.geP = pct(g, "p", 0);
      cfg.geR = pct(g, "r", 100);
      cfg.geLossBad = pct(g, "bad", 100);
      cfg.geLossGood = pct(g, "good", 0);
    }
    cfg.duplicate = pct(o, "duplicatePercent", 0);
    cfg.reorder = pct(o, "reorderPercent", 0);
    cfg.corrupt = pct(o, "corruptPercent", 0);
    cfg.rateBps = u64("rateBps", 1e12);
    cfg.burstBytes = u64("burstBytes", 1e10);
    cfg.limitBytes = u64("limitBytes", 1e10);
    if (!err.empty()) return Napi::String::New(env, err);
    return Napi::String::New(env, engine_->SetImpair(uid, end, dir, &cfg));
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    std::vector<std::map<std::string, uint64_t>> out;
    if (!engine_->Counters(static_cast<uint64_t>(info[0].ToNumber().DoubleValue()), &out)) return env.Null();
    auto arr = Napi::Array::New(env, out.size());
    for (size_t i = 0; i < out.size(); i++) {
      auto o = Napi::Object::New(env);
      for (auto& [k, v] : out[i]) o.Set(k, Napi::Number::New(env, static_cast<double>(v)));
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  // setCable(uid, end, plugged): throws why not
  Napi::Value SetCable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    if (info.Length() < 3) return Throw(env, "setCable(uid, end, plugged)");
    std::string err = engine_->SetCable(static_cast<uint64_t>(info[0].ToNumber().DoubleValue()),
                                        static_cast<int>(info[1].ToNumber().Int32Value()), info[2].ToBoolean());
    if (!err.empty()) return Throw(env, err);
    return env.Undefined();
  }

  // carrier(uid): per end {on, plugged, farKnown, farPresent, farPlugged, holdMs, reason, lastError,
  // eventsTotal, events: [{tsUs, on, reason}]}, or null
  Napi::Value CarrierOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    std::vector<engine::CarrierInfo> out;
    if (!engine_->CarrierOf(static_cast<uint64_t>(info[0].ToNumber().DoubleValue()), &out)) return env.Null();
    auto arr = Napi::Array::New(env, out.size());
    for (size_t i = 0; i < out.size(); i++) {
      const auto& c = out[i];
      auto o = Napi::Object::New(env);
      o.Set("on", c.on);
      o.Set("plugged", c.plugged);
      o.Set("farKnown", c.farKnown);
      o.Set("farPresent", c.farPresent);
      o.Set("farPlugged", c.farPlugged);
      o.Set("holdMs", static_cast<double>(c.holdMs));
      o.Set("reason", c.reason);
      o.Set("lastError", c.lastError);
      o.Set("eventsTotal", static_cast<double>(c.eventsTotal));
      auto ev = Napi::Array::New(env, c.events.size());
      for (size_t k = 0; k < c.events.size(); k++) {
        auto x = Napi::Object::New(env);
        x.Set("tsUs", static_cast<double>(c.events[k].tsUs));
        x.Set("on", c.events[k].on);
        x.Set("reason", c.events[k].reason);
        ev.Set(static_cast<uint32_t>(k), x);
      }
      o.Set("events", ev);
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  Napi::Value PeerUp(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    return Napi::Boolean::New(env, engine_->PeerUp(info[0].ToString().Utf8Value()));
  }

  Napi::Value CarrierRevision(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    return Napi::Number::New(env, static_cast<double>(engine_->CarrierRevision()));
  }

  Napi::Value Peers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    auto peers = engine_->Peers();
    auto arr = Napi::Array::New(env, peers.size());
    for (size_t i = 0; i < peers.size(); i++) {
      const auto& p = peers[i];
      auto o = Napi::Object::New(env);
      o.Set("node", p.node);
      o.Set("address", p.address);
      o.Set("inbound", p.inbound);
      o.Set("outbound", p.outbound);
      o.Set("reconnects", static_cast<double>(p.reconnects));
      o.Set("framesIn", static_cast<double>(p.framesIn));
      o.Set("framesOut", static_cast<double>(p.framesOut));
      o.Set("batchesIn", static_cast<double>(p.batchesIn));
      o.Set("batchesOut", static_cast<double>(p.batchesOut));
      o.Set("queuedBytes", static_cast<double>(p.queuedBytes));
      o.Set("rttMs", p.rttMs);
      o.Set("lastError", p.lastError);
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  Napi::Value Health(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    auto h = engine_->Health();
    auto o = Napi::Object::New(env);
    o.Set("unknownWire", static_cast<double>(h.unknownWire));
    o.Set("malformed", static_cast<double>(h.malformed));
    o.Set("malformedFrames", static_cast<double>(h.malformedFrames));
    o.Set("refusedStreams", static_cast<double>(h.refusedStreams));
    o.Set("acceptedConnections", static_cast<double>(h.acceptedConns));
    o.Set("tlsRefused", static_cast<double>(h.tlsRefused));
    o.Set("lastTlsRefusal", h.lastTlsRefusal);
    o.Set("identityRefused", static_cast<double>(h.identityRefused));
    o.Set("refusedConnections", static_cast<double>(h.refusedConns));
    o.Set("lastConnectionRefusal", h.lastConnRefusal);
    o.Set("tlsRotations", static_cast<double>(h.tlsRotations));
    auto names = Napi::Array::New(env, h.cert.names.size());
    for (size_t i = 0; i < h.cert.names.size(); i++) names.Set(static_cast<uint32_t>(i), h.cert.names[i]);
    o.Set("certNames", names);
    o.Set("certNotAfter", static_cast<double>(h.cert.notAfter));
    o.Set("certSerial", h.cert.serial);
    return o;
  }

  // setTls({cert, key, ca}): the identity new connections use; throws why not.
  Napi::Value SetTls(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsObject()) return Throw(env, "setTls({cert, key, ca})");
    auto t = info[0].As<Napi::Object>();
    std::string err = engine_->SetTls(Pem(t, "cert"), Pem(t, "key"), Pem(t, "ca"));
    if (!err.empty()) return Throw(env, err);
    return env.Undefined();
  }

  Napi::Value RingSnapshot(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    std::vector<uint8_t> out;
    if (!engine_->RingSnapshot(static_cast<uint64_t>(info[0].ToNumber().DoubleValue()), info[1].ToNumber().Int32Value(), &out))
      return env.Null();
    return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
  }

  Napi::Value RingReaderAdd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    int id = engine_->RingReaderAdd(static_cast<uint64_t>(info[0].ToNumber().DoubleValue()), info[1].ToNumber().Int32Value(),
                                    static_cast<size_t>(info[2].ToNumber().DoubleValue()));
    return Napi::Number::New(env, id);
  }

  Napi::Value RingReaderDrain(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    std::vector<uint8_t> out;
    uint64_t dropped = 0;
    if (!engine_->RingReaderDrain(info[0].ToNumber().Int32Value(), &out, &dropped)) return env.Null();
    auto o = Napi::Object::New(env);
    o.Set("data", Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size()));
    o.Set("dropped", static_cast<double>(dropped));
    return o;
  }

  Napi::Value RingReaderRemove(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (engine_) engine_->RingReaderRemove(info[0].ToNumber().Int32Value());
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (engine_) {
      engine_->Stop();
      engine_.reset();
      tsfn_.Release();
    }
    return info.Env().Undefined();
  }

  std::unique_ptr<engine::Engine> engine_;
  Napi::ThreadSafeFunction tsfn_;
  int port_ = 0;
};

Napi::Function InitEngine(Napi::Env env) { return EngineWrap::Init(env); }

}  // namespace pw
