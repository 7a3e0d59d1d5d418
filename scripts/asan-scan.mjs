// Reads the sanitizer report files scripts/test-asan.sh collects (and the
// daemon logs in <dir>/logs) and decides which findings are patchwire's.
// Usage: node scripts/asan-scan.mjs <dir>
// Exits 1 when there is any. A memory error or UBSan report is always a
// finding. A leak is one when the code that allocated it is the addon's:
// walking up from the allocator, past the C++ library and N-API, the first
// frame is in wire/src or node-addon-api. Leaks that V8 or Node allocated
// themselves (V8 keeps pointers in its own heap, which LeakSanitizer does not
// scan, so a process.exit() leaves hundreds) are counted and left alone, even
// when the addon's callback into JavaScript is further up their stack.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node scripts/asan-scan.mjs <report dir>');
  process.exit(2);
}

const ADDON = /(^|[\s/(])src\/[\w/]+\.(cc|h):\d+|node-addon-api\/|patchwire_wire[\w-]*\.node/;
const ALLOCATOR = /libsanitizer|__interceptor_|operator new|\b(malloc|calloc|realloc|posix_memalign|aligned_alloc)\b/;
const CXXLIB = /\/usr\/include\/c\+\+\/|libstdc\+\+\.so|libc\.so|libc-start|\bin (std|__gnu_cxx)::/;
const NAPI = /\bin (napi_\w+|v8impl::|node_api_\w+)/;

/** Whether a leak record's allocation was made by the addon. */
export function addonLeak(record) {
  const frames = record.split('\n').filter((l) => /^\s+#\d+ /.test(l));
  for (const f of frames) {
    if (ALLOCATOR.test(f) || CXXLIB.test(f) || NAPI.test(f)) continue;
    return ADDON.test(f);
  }
  return false;
}

let ours = 0;
let foreign = 0;
const files = readdirSync(dir).filter((f) => /^(asan|ubsan)\./.test(f)).sort();
for (const f of files) {
  const text = readFileSync(path.join(dir, f), 'utf8');
  if (/ERROR: AddressSanitizer|runtime error:/.test(text)) {
    ours++;
    console.error(`\n=== ${f}: sanitizer finding ===\n${text.slice(0, 20000)}`);
    continue;
  }
  if (!/ERROR: LeakSanitizer/.test(text)) continue;
  for (const r of text.split(/\n(?=(?:Direct|Indirect) leak of )/).slice(1)) {
    if (addonLeak(r)) {
      ours++;
      console.error(`\n=== ${f}: leak in the addon ===\n${r.split('\n\n')[0]}`);
    } else foreign++;
  }
}
// Daemon logs the test harness kept: UBSan (and anything the sanitizers print before log_path applies) writes there.
const logDir = path.join(dir, 'logs');
const logs = existsSync(logDir) ? readdirSync(logDir).sort() : [];
for (const f of logs) {
  const text = readFileSync(path.join(logDir, f), 'utf8');
  const at = text.search(/^\S+:\d+:\d+: runtime error: |ERROR: (AddressSanitizer|LeakSanitizer)/m);
  if (at >= 0) {
    ours++;
    console.error(`\n=== logs/${f}: sanitizer finding ===\n${text.slice(at, at + 20000)}`);
  }
}
// Every daemon that exits through process.exit() leaves V8 leak records, so fewer
// node leak reports than daemon logs means some daemon never finished its leak
// check (killed, or a test that SIGKILLs daemons on purpose).
const checked = files.filter((f) => f.startsWith('asan.node.') && /ERROR: LeakSanitizer/.test(readFileSync(path.join(dir, f), 'utf8'))).length;
if (logs.length > checked) console.error(`asan-scan: warning: ${logs.length} daemons ran but only ${checked} node processes finished a leak check`);
console.error(`\nasan-scan: ${files.length} report files, ${logs.length} daemon logs, ${ours} findings in patchwire, ${foreign} leak records of Node/V8 itself left alone; reports in ${dir}`);
process.exit(ours > 0 ? 1 : 0);
