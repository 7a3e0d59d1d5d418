#!/usr/bin/env -S node --single-threaded-gc
// --single-threaded-gc: see DAEMON_NODE_FLAGS in src/lab/supervisor.ts.
import '../dist/src/cli/main.js';
