/*
 * libFuzzer target for the CNI plugin's JSON reader (the strict validator and
 * the member lookups main() runs on whatever a runtime pipes to stdin) and
 * its CNI_ARGS parser. Built by scripts/fuzz-cni.sh with ASan and UBSan.
 * The plugin's source is included whole, its main() renamed, so the fuzzed
 * code is the code that ships.
 *
 * Invariants checked beyond "no crash": a member found in a valid object is
 * inside the input and is itself exactly one valid JSON value; a string
 * member has no quotes or backslashes left in it.
 */
#define main patchwire_cni_main
#include "../patchwire-cni.c"
#undef main

#include <stdint.h>

static const char *KEYS[] = {"cniVersion", "name", "type", "socket", "prevResult", "cni.dev/valid-attachments", "", "\"", "runtimeConfig"};

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "invariant failed: %s\n", what);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size heap copy, so ASan sees any read past the end. */
  char *buf = malloc(size ? size : 1);
  if (size) memcpy(buf, data, size);
  const char *err = NULL;
  if (json_object_valid(buf, size, &err)) {
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++) {
      span s;
      if (json_member(buf, size, KEYS[i], &s)) {
        check(s.start >= buf && s.start + s.len <= buf + size, "member inside the input");
        reader r = {s.start, s.start + s.len, NULL};
        check(skip_value(&r, 0) && r.p == r.end, "member is exactly one JSON value");
      }
      int wrong = 0;
      char *v = json_string_member(buf, size, KEYS[i], &wrong);
      if (v) {
        check(!wrong && !strchr(v, '"') && !strchr(v, '\\'), "string member without quotes or escapes");
        free(v);
      }
    }
  } else {
    check(err != NULL && *err, "a refusal says why");
  }
  /* CNI_ARGS comes from the environment as a C string. */
  char *args = malloc(size + 1);
  if (size) memcpy(args, data, size);
  args[size] = 0;
  static const char *ARGS[] = {"K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_UID", ""};
  for (size_t i = 0; i < sizeof ARGS / sizeof ARGS[0]; i++) {
    char *v = cni_arg(args, ARGS[i]);
    check(v != NULL && strlen(v) <= size, "CNI_ARGS value inside the input");
    free(v);
  }
  free(args);
  free(buf);
  return 0;
}
