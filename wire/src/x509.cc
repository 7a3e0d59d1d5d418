#include "x509.h"

#include "x509_parse.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

namespace pw {
namespace {

// Owners for OpenSSL objects, so every early return frees what it made.
struct Free {
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(STACK_OF(X509_EXTENSION) * p) const { sk_X509_EXTENSION_pop_free(p, X509_EXTENSION_free); }
  void operator()(BIGNUM* p) const { BN_free(p); }
};
template <typename T>
using Own = std::unique_ptr<T, Free>;

Napi::Value Throw(Napi::Env env, const std::string& msg) {
  Napi::Error::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool GetPem(Napi::Env env, const Napi::Object& o, const char* k, std::string* out) {
  Napi::Value v = o.Get(k);
  if (v.IsBuffer()) {
    auto b = v.As<Napi::Buffer<char>>();
    out->assign(b.Data(), b.Length());
  } else if (v.IsString()) {
    *out = v.As<Napi::String>().Utf8Value();
  } else {
    Throw(env, std::string(k) + " must be a PEM string or Buffer");
    return false;
  }
  if (out->size() > kMaxPem) {
    Throw(env, std::string(k) + " is larger than " + std::to_string(kMaxPem) + " bytes");
    return false;
  }
  return true;
}

Own<BIO> MemBio(const std::string& s) { return Own<BIO>(BIO_new_mem_buf(s.data(), static_cast<int>(s.size()))); }

std::string BioString(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return std::string(p, static_cast<size_t>(n > 0 ? n : 0));
}

bool AddExt(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  Own<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str()));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

// csrInfo(pem) -> {commonName, dnsNames, signatureValid}: what a request
// asks for, and whether its self-signature holds (it proves the requester
// holds the key).
Napi::Value CsrInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return Throw(env, "csrInfo({csr})");
  std::string pem, err;
  if (!GetPem(env, info[0].As<Napi::Object>(), "csr", &pem)) return env.Undefined();
  CsrFields f;
  if (!ParseCsrPem(pem.data(), pem.size(), &f, &err)) return Throw(env, err);
  const std::vector<std::string>& dns = f.dns_names;
  auto out = Napi::Object::New(env);
  out.Set("commonName", f.common_name);
  auto arr = Napi::Array::New(env, dns.size());
  for (size_t i = 0; i < dns.size(); i++) arr.Set(static_cast<uint32_t>(i), dns[i]);
  out.Set("dnsNames", arr);
  out.Set("signatureValid", f.signature_valid);
  return out;
}

// makeCsr({key, name}) -> PEM request for CN=name, subjectAltName DNS:name.
Napi::Value MakeCsr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return Throw(env, "makeCsr({key, name})");
  auto o = info[0].As<Napi::Object>();
  std::string keyPem;
  if (!GetPem(env, o, "key", &keyPem)) return env.Undefined();
  std::string name = o.Get("name").ToString().Utf8Value();
  if (name.empty() || name.size() > 253) return Throw(env, "makeCsr: name must be 1 to 253 characters");
  auto kb = MemBio(keyPem);
  Own<EVP_PKEY> key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!key) return Throw(env, SslErr("makeCsr: not a PEM private key"));
  Own<X509_REQ> req(X509_REQ_new());
  X509_NAME* subj = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_NID(subj, NID_commonName, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  Own<STACK_OF(X509_EXTENSION)> exts(sk_X509_EXTENSION_new_null());
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, ("DNS:" + name).c_str());
  if (!san) return Throw(env, SslErr("makeCsr: subjectAltName"));
  sk_X509_EXTENSION_push(exts.get(), san);
  if (X509_REQ_set_version(req.get(), 0) != 1 || X509_REQ_set_pubkey(req.get(), key.get()) != 1 ||
      X509_REQ_add_extensions(req.get(), exts.get()) != 1 || X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0)
    return Throw(env, SslErr("makeCsr"));
  Own<BIO> out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(out.get(), req.get());
  return Napi::String::New(env, BioString(out.get()));
}

// signCsr({csr, caCert, caKey, name, notBefore, notAfter}) -> PEM certificate
// for `name` alone: subject CN=name and subjectAltName DNS:name whatever the
// request asked for (the signer decides the name), the request's public key,
// server and client auth, a random serial, valid from notBefore to notAfter
// (unix seconds).
Napi::Value SignCsr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return Throw(env, "signCsr({csr, caCert, caKey, name, notBefore, notAfter})");
  auto o = info[0].As<Napi::Object>();
  std::string csrPem, caPem, caKeyPem;
  if (!GetPem(env, o, "csr", &csrPem) || !GetPem(env, o, "caCert", &caPem) || !GetPem(env, o, "caKey", &caKeyPem))
    return env.Undefined();
  std::string name = o.Get("name").ToString().Utf8Value();
  if (name.empty() || name.size() > 253) return Throw(env, "signCsr: name must be 1 to 253 characters");
  double nb = o.Get("notBefore").ToNumber().DoubleValue(), na = o.Get("notAfter").ToNumber().DoubleValue();
  if (!(nb > 0) || !(na > nb) || na > 253402300799.0) return Throw(env, "signCsr: notBefore and notAfter must be unix seconds, notBefore < notAfter");
  auto rb = MemBio(csrPem);
  Own<X509_REQ> req(PEM_read_bio_X509_REQ(rb.get(), nullptr, nullptr, nullptr));
  if (!req) return Throw(env, SslErr("signCsr: not a PEM certificate request"));
  Own<EVP_PKEY> pub(X509_REQ_get_pubkey(req.get()));
  if (!pub || X509_REQ_verify(req.get(), pub.get()) != 1) return Throw(env, SslErr("signCsr: the request's signature does not verify"));
  auto cb = MemBio(caPem);
  Own<X509> ca(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  if (!ca) return Throw(env, SslErr("signCsr: not a PEM CA certificate"));
  auto kb = MemBio(caKeyPem);
  Own<EVP_PKEY> caKey(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!caKey) return Throw(env, SslErr("signCsr: not a PEM CA key"));
  if (X509_check_private_key(ca.get(), caKey.get()) != 1) return Throw(env, SslErr("signCsr: the CA key does not match the CA certificate"));

  Own<X509> cert(X509_new());
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return Throw(env, SslErr("signCsr: random serial"));
  serial[0] &= 0x7f;  // positive
  Own<BIGNUM> bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  X509_set_version(cert.get(), 2);
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  X509_time_adj_ex(X509_getm_notBefore(cert.get()), 0, 0, nullptr);
  ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(nb));
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(na));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get()));
  X509_NAME* subj = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_NID(subj, NID_commonName, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_set_pubkey(cert.get(), pub.get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.get(), cert.get(), nullptr, nullptr, 0);
  if (!AddExt(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
      !AddExt(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature") ||
      !AddExt(cert.get(), &ctx, NID_ext_key_usage, "serverAuth,clientAuth") ||
      !AddExt(cert.get(), &ctx, NID_subject_alt_name, "DNS:" + name) ||
      !AddExt(cert.get(), &ctx, NID_subject_key_identifier, "hash") ||
      !AddExt(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"))
    return Throw(env, SslErr("signCsr: extensions"));
  if (X509_sign(cert.get(), caKey.get(), EVP_sha256()) <= 0) return Throw(env, SslErr("signCsr: signing"));
  Own<BIO> out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(out.get(), cert.get());
  return Napi::String::New(env, BioString(out.get()));
}

}  // namespace

void InitX509(Napi::Env env, Napi::Object exports) {
  exports.Set("csrInfo", Napi::Function::New(env, CsrInfo));
  exports.Set("makeCsr", Napi::Function::New(env, MakeCsr));
  exports.Set("signCsr", Napi::Function::New(env, SignCsr));
}

}  // namespace pw
