#include "x509_parse.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>

namespace pw {
namespace {

struct FreeBio {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct FreeReq {
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
};
struct FreeKey {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct FreeNames {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
struct FreeExts {
  void operator()(STACK_OF(X509_EXTENSION) * p) const { sk_X509_EXTENSION_pop_free(p, X509_EXTENSION_free); }
};

bool PrintableName(const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] < 0x21 || p[i] > 0x7e) return false;
  return true;
}

}  // namespace

std::string SslErr(const std::string& what) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return what;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return what + ": " + buf;
}

std::string CommonName(X509_NAME* name) {
  int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) return "";
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, s);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

std::vector<std::string> DnsNames(const GENERAL_NAMES* names) {
  std::vector<std::string> out;
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && out.size() < kMaxDnsNames; i++) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type != GEN_DNS) continue;
    int l = ASN1_STRING_length(g->d.dNSName);
    const unsigned char* p = ASN1_STRING_get0_data(g->d.dNSName);
    if (l > 0 && static_cast<size_t>(l) <= kMaxDnsNameBytes && PrintableName(p, static_cast<size_t>(l)))
      out.emplace_back(reinterpret_cast<const char*>(p), static_cast<size_t>(l));
  }
  return out;
}

bool ParseCsrPem(const char* data, size_t len, CsrFields* out, std::string* err) {
  if (len > kMaxPem) {
    *err = "larger than " + std::to_string(kMaxPem) + " bytes";
    return false;
  }
  std::unique_ptr<BIO, FreeBio> bio(BIO_new_mem_buf(data, static_cast<int>(len)));
  if (!bio) {
    *err = SslErr("out of memory");
    return false;
  }
  std::unique_ptr<X509_REQ, FreeReq> req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    *err = SslErr("not a PEM certificate request");
    return false;
  }
  std::unique_ptr<EVP_PKEY, FreeKey> key(X509_REQ_get_pubkey(req.get()));
  out->signature_valid = key && X509_REQ_verify(req.get(), key.get()) == 1;
  ERR_clear_error();
  out->dns_names.clear();
  if (STACK_OF(X509_EXTENSION)* raw = X509_REQ_get_extensions(req.get())) {
    std::unique_ptr<STACK_OF(X509_EXTENSION), FreeExts> exts(raw);
    std::unique_ptr<GENERAL_NAMES, FreeNames> names(
        static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts.get(), NID_subject_alt_name, nullptr, nullptr)));
    out->dns_names = DnsNames(names.get());
  }
  ERR_clear_error();
  out->common_name = CommonName(X509_REQ_get_subject_name(req.get()));
  // Like a DNS name: the signer compares it with a node's name and quotes it in its answers.
  if (out->common_name.size() > kMaxDnsNameBytes ||
      !PrintableName(reinterpret_cast<const unsigned char*>(out->common_name.data()), out->common_name.size()))
    out->common_name.clear();
  return true;
}

}  // namespace pw
