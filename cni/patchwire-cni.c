/*
 * patchwire CNI plugin (CNI spec 1.0.0; also answers for 0.3.x, 0.4.0, and
 * 1.1.0 with its STATUS and GC).
 *
 * Chained after the primary plugin. It does no plumbing itself: ADD hands the
 * pod's network namespace and identity to the node's wire daemon over a unix
 * socket and returns the previous result unchanged; the daemon wires the pod
 * asynchronously, so ADD answers in milliseconds however many links the pod
 * has. DEL tells the daemon to drop the pod's wires. STATUS asks the daemon
 * whether it is ready (its API watches have listed); GC passes the runtime's
 * cni.dev/valid-attachments to the daemon, which drops the pods not in it.
 * Written in C and linked statically so it runs on nodes without Node.js or
 * any shared library.
 *
 * Daemon protocol: one JSON object per connection each way. The request names
 * the command and the pod; the reply is {} on success or a CNI error object
 * ({"code":N,"msg":...}) that is passed to the runtime as it is.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/patchwire/cni.sock"
#define MAX_INPUT (4 << 20)
#define MAX_DEPTH 128
#define DAEMON_TIMEOUT_MS 10000

/* CNI error codes (SPEC.md, "Error"). */
enum {
  E_INCOMPATIBLE_VERSION = 1,
  E_UNSUPPORTED_FIELD = 2,
  E_INVALID_ENV = 4,
  E_IO = 5,
  E_DECODE = 6,
  E_INVALID_CONFIG = 7,
  E_TRY_AGAIN = 11,
  E_NOT_AVAILABLE = 50,
};

static const char *SUPPORTED[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define N_SUPPORTED (sizeof SUPPORTED / sizeof SUPPORTED[0])

static const char *result_version = "1.0.0";

/* ---- output ---------------------------------------------------------- */

static void put_json_string(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c == '\n') fputs("\\n", f);
    else if (c == '\t') fputs("\\t", f);
    else if (c == '\r') fputs("\\r", f);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void put_str(FILE *f, const char *s) { put_json_string(f, s, strlen(s)); }

/* Prints a CNI error on stdout and exits non-zero, as the spec asks. */
static void fail(int code, const char *details, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("{\"cniVersion\":");
  put_str(stdout, result_version);
  printf(",\"code\":%d,\"msg\":", code);
  put_str(stdout, msg);
  if (details && *details) {
    printf(",\"details\":");
    put_str(stdout, details);
  }
  printf("}\n");
  fflush(stdout);
  exit(1);
}

/* ---- a small strict JSON reader -------------------------------------- */

typedef struct {
  const char *p, *end;
  const char *err;
} reader;

static void ws(reader *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int skip_value(reader *r, int depth);

static int skip_string(reader *r) {
  if (r->p >= r->end) return r->err = "unexpected end of input", 0;
  if (*r->p != '"') return r->err = "expected a string", 0;
  r->p++;
  while (r->p < r->end) {
    unsigned char c = (unsigned char)*r->p++;
    if (c == '"') return 1;
    if (c < 0x20) return r->err = "control character in string", 0;
    if (c == '\\') {
      if (r->p >= r->end) break;
      char e = *r->p++;
      if (e == 'u') {
        for (int i = 0; i < 4; i++, r->p++)
          if (r->p >= r->end || !strchr("0123456789abcdefABCDEF", *r->p) || !*r->p) return r->err = "bad \\u escape", 0;
      } else if (!strchr("\"\\/bfnrt", e) || !e) {
        return r->err = "bad escape in string", 0;
      }
    }
  }
  return r->err = "unterminated string", 0;
}

static int skip_literal(reader *r, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0) return r->err = "unexpected token", 0;
  r->p += n;
  return 1;
}

static int skip_number(reader *r) {
  const char *s = r->p;
  if (r->p < r->end && *r->p == '-') r->p++;
  if (r->p >= r->end) return r->err = "bad number", 0;
  if (*r->p == '0') r->p++;
  else if (*r->p >= '1' && *r->p <= '9') while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  else return r->err = "unexpected token", 0;
  if (r->p < r->end && *r->p == '.') {
    r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') return r->err = "bad number", 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
    r->p++;
    if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') return r->err = "bad number", 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  }
  return r->p > s;
}

static int skip_container(reader *r, int depth, char close) {
  if (depth > MAX_DEPTH) return r->err = "nested too deeply", 0;
  r->p++;
  ws(r);
  if (r->p < r->end && *r->p == close) return r->p++, 1;
  for (;;) {
    ws(r);
    if (close == '}') {
      if (!skip_string(r)) return 0;
      ws(r);
      if (r->p >= r->end || *r->p != ':') return r->err = "expected ':'", 0;
      r->p++;
    }
    if (!skip_value(r, depth + 1)) return 0;
    ws(r);
    if (r->p >= r->end) return r->err = "unexpected end of input", 0;
    if (*r->p == ',') {
      r->p++;
      continue;
    }
    if (*r->p == close) return r->p++, 1;
    return r->err = close == '}' ? "expected ',' or '}'" : "expected ',' or ']'", 0;
  }
}

static int skip_value(reader *r, int depth) {
  ws(r);
  if (r->p >= r->end) return r->err = "unexpected end of input", 0;
  switch (*r->p) {
    case '{': return skip_container(r, depth, '}');
    case '[': return skip_container(r, depth, ']');
    case '"': return skip_string(r);
    case 't': return skip_literal(r, "true");
    case 'f': return skip_literal(r, "false");
    case 'n': return skip_literal(r, "null");
    default: return skip_number(r);
  }
}

typedef struct {
  const char *start;
  size_t len;
} span;

/* Validates that [buf, buf+n) is one JSON object. */
static int json_object_valid(const char *buf, size_t n, const char **err) {
  reader r = {buf, buf + n, NULL};
  ws(&r);
  if (r.p >= r.end || *r.p != '{') return *err = "input is not a JSON object", 0;
  if (!skip_value(&r, 0)) return *err = r.err, 0;
  ws(&r);
  if (r.p != r.end) return *err = "trailing data after the JSON object", 0;
  return 1;
}

/* The raw text of a top-level member of a valid object, if present. */
static int json_member(const char *buf, size_t n, const char *key, span *out) {
  reader r = {buf, buf + n, NULL};
  ws(&r);
  r.p++;
  ws(&r);
  if (*r.p == '}') return 0;
  for (;;) {
    ws(&r);
    const char *k = r.p + 1;
    skip_string(&r);
    size_t klen = (size_t)(r.p - 1 - k);
    ws(&r);
    r.p++; /* ':' */
    ws(&r);
    const char *v = r.p;
    skip_value(&r, 0);
    if (klen == strlen(key) && memcmp(k, key, klen) == 0) {
      out->start = v;
      out->len = (size_t)(r.p - v);
      return 1;
    }
    ws(&r);
    if (*r.p == '}') return 0;
    r.p++; /* ',' */
  }
}

/* A member that must be a string without escapes (versions, names, paths); NULL when absent. */
static char *json_string_member(const char *buf, size_t n, const char *key, int *wrong_type) {
  span s;
  *wrong_type = 0;
  if (!json_member(buf, n, key, &s)) return NULL;
  if (s.len < 2 || s.start[0] != '"' || memchr(s.start, '\\', s.len)) {
    *wrong_type = 1;
    return NULL;
  }
  char *out = malloc(s.len - 1);
  memcpy(out, s.start + 1, s.len - 2);
  out[s.len - 2] = 0;
  return out;
}

/* ---- environment ----------------------------------------------------- */

/* Value of KEY in CNI_ARGS ("K8S_POD_NAME=x;K8S_POD_NAMESPACE=y"), or "". */
static char *cni_arg(const char *args, const char *key) {
  size_t klen = strlen(key);
  const char *p = args ? args : "";
  while (*p) {
    const char *semi = strchr(p, ';');
    size_t len = semi ? (size_t)(semi - p) : strlen(p);
    if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
      char *v = strndup(p + klen + 1, len - klen - 1);
      return v;
    }
    p += len;
    if (*p == ';') p++;
  }
  return strdup("");
}

static const char *env(const char *k) {
  const char *v = getenv(k);
  return v ? v : "";
}

/* ---- the daemon ------------------------------------------------------ */

static int ms_left(struct timespec *deadline) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long ms = (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
  return ms < 0 ? 0 : (int)ms;
}

/*
 * Sends the request and reads the reply. Returns 0 on success, or -errno
 * when the daemon cannot be reached (the caller decides what that means for
 * the command); protocol errors fail with E_IO.
 */
static int ask_daemon(const char *sock, const char *req, size_t reqlen, char **reply, size_t *replylen) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof sa.sun_path) fail(E_INVALID_CONFIG, sock, "socket path is too long");
  strcpy(sa.sun_path, sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += DAEMON_TIMEOUT_MS / 1000;
  size_t off = 0;
  while (off < reqlen) {
    ssize_t w = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      return -e;
    }
    off += (size_t)w;
  }
  shutdown(fd, SHUT_WR);
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int left = ms_left(&deadline);
    int pr = left ? poll(&pfd, 1, left) : 0;
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) {
      close(fd);
      fail(E_TRY_AGAIN, sock, "patchwire daemon did not answer within %d ms", DAEMON_TIMEOUT_MS);
    }
    if (n == cap) {
      if (cap >= MAX_INPUT) fail(E_IO, sock, "patchwire daemon reply is too large");
      cap *= 2;
      buf = realloc(buf, cap);
    }
    ssize_t rd = read(fd, buf + n, cap - n);
    if (rd < 0 && errno == EINTR) continue;
    if (rd < 0) {
      int e = errno;
      close(fd);
      fail(E_IO, sock, "reading the patchwire daemon's reply: %s", strerror(e));
    }
    if (rd == 0) break;
    n += (size_t)rd;
  }
  close(fd);
  *reply = buf;
  *replylen = n;
  return 0;
}

/* ---- main -------------------------------------------------------------- */

static char *read_stdin(size_t *n) {
  size_t cap = 8192;
  char *buf = malloc(cap);
  *n = 0;
  for (;;) {
    if (*n == cap) {
      if (cap >= MAX_INPUT) fail(E_DECODE, NULL, "network configuration on stdin is larger than %d bytes", MAX_INPUT);
      cap *= 2;
      buf = realloc(buf, cap);
    }
    ssize_t r = read(0, buf + *n, cap - *n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(E_IO, NULL, "reading stdin: %s", strerror(errno));
    if (r == 0) return buf;
    *n += (size_t)r;
  }
}

static int supported(const char *v) {
  for (size_t i = 0; i < N_SUPPORTED; i++)
    if (strcmp(v, SUPPORTED[i]) == 0) return 1;
  return 0;
}

/* "0.3.1" < "0.4.0" < "1.0.0": numeric per component. */
static int version_before(const char *a, const char *b) {
  int a1 = 0, a2 = 0, a3 = 0, b1 = 0, b2 = 0, b3 = 0;
  sscanf(a, "%d.%d.%d", &a1, &a2, &a3);
  sscanf(b, "%d.%d.%d", &b1, &b2, &b3);
  if (a1 != b1) return a1 < b1;
  if (a2 != b2) return a2 < b2;
  return a3 < b3;
}

static void print_version(void) {
  printf("{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[");
  for (size_t i = 0; i < N_SUPPORTED; i++) printf("%s\"%s\"", i ? "," : "", SUPPORTED[i]);
  printf("]}\n");
}

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    printf(
        "patchwire CNI plugin: run by the container runtime, not by hand.\n"
        "Chain it after the primary plugin: {\"type\": \"patchwire\"[, \"socket\": \"%s\"]}.\n"
        "It hands each pod's network namespace to the node's patchwire daemon.\n",
        DEFAULT_SOCKET);
    return 0;
  }
  const char *cmd = getenv("CNI_COMMAND");
  if (!cmd || !*cmd) fail(E_INVALID_ENV, "CNI_COMMAND", "CNI_COMMAND is not set");
  int is_add = !strcmp(cmd, "ADD"), is_del = !strcmp(cmd, "DEL"), is_check = !strcmp(cmd, "CHECK");
  int is_status = !strcmp(cmd, "STATUS"), is_gc = !strcmp(cmd, "GC");
  if (!strcmp(cmd, "VERSION")) {
    /* stdin carries {"cniVersion": ...}, which does not change our answer. */
    print_version();
    return 0;
  }
  if (!is_add && !is_del && !is_check && !is_status && !is_gc)
    fail(E_INVALID_ENV, "CNI_COMMAND", "CNI_COMMAND '%s' is not ADD, DEL, CHECK, STATUS, GC or VERSION", cmd);

  size_t n;
  char *conf = read_stdin(&n);
  const char *err = NULL;
  if (n == 0) fail(E_DECODE, NULL, "no network configuration on stdin");
  if (!json_object_valid(conf, n, &err)) fail(E_DECODE, err, "network configuration on stdin is not valid JSON: %s", err);
  int bad;
  char *version = json_string_member(conf, n, "cniVersion", &bad);
  if (bad) fail(E_INVALID_CONFIG, "cniVersion", "cniVersion must be a string");
  if (!version) fail(E_INVALID_CONFIG, "cniVersion", "network configuration has no cniVersion");
  if (!supported(version)) {
    char details[256];
    snprintf(details, sizeof details, "supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
    fail(E_INCOMPATIBLE_VERSION, details, "CNI version %s is not supported", version);
  }
  result_version = version;
  char *name = json_string_member(conf, n, "name", &bad);
  if (bad) fail(E_INVALID_CONFIG, "name", "name must be a string");
  char *sock = json_string_member(conf, n, "socket", &bad);
  if (bad) fail(E_INVALID_CONFIG, "socket", "socket must be a string (path of the patchwire daemon's CNI socket)");
  if (!sock) sock = DEFAULT_SOCKET;
  if (is_check && version_before(version, "0.4.0")) fail(E_INCOMPATIBLE_VERSION, version, "CHECK needs CNI version 0.4.0 or later, not %s", version);
  if ((is_status || is_gc) && version_before(version, "1.1.0")) fail(E_INCOMPATIBLE_VERSION, version, "%s needs CNI version 1.1.0, not %s", cmd, version);

  /* GC: the attachments the runtime still has. libcni also sends the list
     as cni.dev/attachments (an earlier name in the spec); either will do. */
  span valid = {NULL, 0};
  if (is_gc) {
    if (!json_member(conf, n, "cni.dev/valid-attachments", &valid) && !json_member(conf, n, "cni.dev/attachments", &valid))
      fail(E_INVALID_CONFIG, "cni.dev/valid-attachments", "GC needs cni.dev/valid-attachments; without it nothing is collected");
    if (valid.start[0] != '[') fail(E_INVALID_CONFIG, "cni.dev/valid-attachments", "cni.dev/valid-attachments must be an array");
  }

  const char *container = env("CNI_CONTAINERID"), *netns = env("CNI_NETNS"), *ifname = env("CNI_IFNAME");
  if (!is_status && !is_gc) {
    char missing[128] = "";
    if (!*container) strcat(missing, "CNI_CONTAINERID ");
    if (!*ifname) strcat(missing, "CNI_IFNAME ");
    if (!is_del && !*netns) strcat(missing, "CNI_NETNS ");
    if (*missing) {
      missing[strlen(missing) - 1] = 0;
      fail(E_INVALID_ENV, missing, "required environment variables are not set: %s", missing);
    }
  }
  char *pod_ns = cni_arg(getenv("CNI_ARGS"), "K8S_POD_NAMESPACE");
  char *pod = cni_arg(getenv("CNI_ARGS"), "K8S_POD_NAME");
  char *pod_uid = cni_arg(getenv("CNI_ARGS"), "K8S_POD_UID");
  if (is_add && (!*pod_ns || !*pod))
    fail(E_INVALID_ENV, "CNI_ARGS", "CNI_ARGS must name the pod (K8S_POD_NAMESPACE and K8S_POD_NAME); patchwire wires Kubernetes pods");

  span prev = {NULL, 0};
  int has_prev = json_member(conf, n, "prevResult", &prev);
  if (has_prev && prev.start[0] != '{') fail(E_INVALID_CONFIG, "prevResult", "prevResult must be an object");
  if (is_check && !has_prev) fail(E_INVALID_CONFIG, "prevResult", "CHECK needs prevResult");

  /* The request. */
  char *req;
  size_t reqlen;
  FILE *f = open_memstream(&req, &reqlen);
  fprintf(f, "{\"command\":");
  put_str(f, cmd);
  fprintf(f, ",\"cniVersion\":");
  put_str(f, version);
  fprintf(f, ",\"network\":");
  put_str(f, name ? name : "");
  fprintf(f, ",\"containerId\":");
  put_str(f, container);
  fprintf(f, ",\"netns\":");
  put_str(f, netns);
  fprintf(f, ",\"ifName\":");
  put_str(f, ifname);
  fprintf(f, ",\"namespace\":");
  put_str(f, pod_ns);
  fprintf(f, ",\"pod\":");
  put_str(f, pod);
  fprintf(f, ",\"podUid\":");
  put_str(f, pod_uid);
  if (is_gc) {
    /* Passed as it came (already checked to be valid JSON); the daemon checks its entries. */
    fprintf(f, ",\"validAttachments\":");
    fwrite(valid.start, 1, valid.len, f);
  }
  fprintf(f, "}\n");
  fclose(f);

  char *reply = NULL;
  size_t replylen = 0;
  int rc = ask_daemon(sock, req, reqlen, &reply, &replylen);
  if (rc < 0) {
    if (is_del) {
      /* DEL must not wedge pod removal: a daemon that comes back drops the
         wires of pods that no longer exist by itself. */
      fprintf(stderr, "patchwire: daemon not reachable at %s (%s); its wires for this pod go when it resyncs\n", sock, strerror(-rc));
      return 0;
    }
    fail(is_status ? E_NOT_AVAILABLE : E_TRY_AGAIN, sock, "patchwire daemon not reachable at %s: %s", sock, strerror(-rc));
  }
  if (!json_object_valid(reply, replylen, &err)) fail(E_IO, err, "patchwire daemon sent a malformed reply: %s", err);
  span code;
  if (json_member(reply, replylen, "code", &code)) {
    fwrite(reply, 1, replylen, stdout);
    if (replylen == 0 || reply[replylen - 1] != '\n') fputc('\n', stdout);
    return 1;
  }
  if (is_add) {
    if (has_prev) {
      fwrite(prev.start, 1, prev.len, stdout);
      fputc('\n', stdout);
    } else {
      printf("{\"cniVersion\":");
      put_str(stdout, version);
      printf("}\n");
    }
  }
  return 0;
}
