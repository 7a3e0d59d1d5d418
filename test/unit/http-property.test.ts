// Property tests of what the daemons' HTTP port parses from a request before
// any handler runs: the request target (splitTarget) and the download name
// (attachment). Whatever a client sends, the answer is a path and query or an
// HttpFailure with status 400, never another exception; a name of any
// characters gives a header Node accepts, which says the exact name.
import http from 'node:http';

import fc from 'fast-check';
import t from 'tap';

import { attachment, HTTP_LIMITS, HttpFailure, splitTarget } from '../../src/capture/http.js';
import { foldWires } from '../../src/capture/limits.js';

const RUNS = 3000;

t.test('any request target: a path and query, or a 400', async (t) => {
  let refused = 0;
  fc.assert(
    fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.webUrl({ withQueryParameters: true, withFragments: true }), fc.string({ unit: 'grapheme-ascii', maxLength: 200 }).map((s) => `/${s}`)), (target) => {
      try {
        const { path, query } = splitTarget(target);
        return path.startsWith('/') && !path.includes('?') && !path.includes('#') && query instanceof URLSearchParams;
      } catch (err) {
        refused++;
        return err instanceof HttpFailure && err.status === 400;
      }
    }),
    { numRuns: RUNS },
  );
  t.ok(refused > 0, `some targets were refused (${refused}), and only with a 400`);
});

t.test('origin-form and absolute-form targets keep their path and every parameter', async (t) => {
  const segment = fc.stringMatching(/^[A-Za-z0-9._~-]{1,12}$/);
  const params = fc.array(fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 })), { maxLength: 20 });
  fc.assert(
    fc.property(fc.array(segment, { minLength: 1, maxLength: 5 }), params, fc.boolean(), (segments, kv, absolute) => {
      const path = `/${segments.join('/')}`;
      const search = new URLSearchParams(kv).toString();
      const target = `${absolute ? 'http://node1.example:7080' : ''}${path}${search ? `?${search}` : ''}`;
      const got = splitTarget(target);
      return got.path === path && JSON.stringify([...got.query]) === JSON.stringify(kv);
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} targets kept their path and parameters`);
});

t.test(`more than ${HTTP_LIMITS.maxParams} parameters are refused`, async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: HTTP_LIMITS.maxParams + 1, max: HTTP_LIMITS.maxParams * 4 }), (n) => {
      try {
        splitTarget(`/capture?${Array.from({ length: n }, (_, i) => `wire=a${i}`).join('&')}`);
        return false;
      } catch (err) {
        return err instanceof HttpFailure && err.status === 400;
      }
    }),
    { numRuns: 50 },
  );
  t.pass('every such target got a 400');
});

t.test('a download name of any characters gives a header Node accepts, naming it exactly', async (t) => {
  // Any code point, and lone surrogate halves, quotes, percent signs, control characters.
  const char = fc.oneof(fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }), fc.constantFrom('\ud83d', '\ude00', '\udfff', '"', '%', ';', '\\', '\x00', '\n', '\x7f'));
  fc.assert(
    fc.property(fc.string({ unit: char, maxLength: 80 }), (name) => {
      const v = attachment(name);
      http.validateHeaderValue('content-disposition', v);
      if (!/^[\x20-\x7e]*$/.test(v)) return false;
      const exact = decodeURIComponent(/filename\*=UTF-8''(.*)$/.exec(v)![1]!);
      // Lone surrogates cannot be encoded; they become U+FFFD, the rest is exact.
      return exact === name.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} names`);
});

t.test('wire names asked twice are folded, order kept', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom<string>('r1/eth1', 'r1/eth2', 'r2/eth1', 'r3/eth9'), { maxLength: 30 }), (names) => {
      const firstSeen = names.filter((n, i) => names.indexOf(n) === i);
      return JSON.stringify(foldWires(names)) === JSON.stringify(firstSeen);
    }),
    { numRuns: RUNS },
  );
  t.pass('folded');
});
