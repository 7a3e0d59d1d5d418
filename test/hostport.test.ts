// One parser for every host:port the daemon and CLI take (listen, peer, --http, --health).
import t from 'tap';

import { parseHostPort } from '../src/util/hostport.js';

t.test('host:port', async (t) => {
  t.same(parseHostPort('198.18.0.1:7000'), { host: '198.18.0.1', port: 7000 });
  t.same(parseHostPort('[::1]:80'), { host: '::1', port: 80 }, 'IPv6 in brackets');
  t.same(parseHostPort(':9'), { host: '', port: 9 }, 'no host: every address');
  for (const bad of ['node a:1', 'x:99999', 'x', '[::1]', 'x:', '[::1:80']) t.equal(parseHostPort(bad), null, `'${bad}' is refused`);
});
