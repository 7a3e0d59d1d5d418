// The lab's browser view. Plain ES module, standard web APIs only (fetch with
// streamed bodies for server-sent events, <dialog>, Clipboard); cytoscape.js
// draws the graph. Every API call sends the lab's token as a Bearer header.
import cytoscape from './cytoscape.esm.min.mjs';

const $ = (sel) => document.querySelector(sel);
const MAX_PACKETS = 300;

// The token comes in the URL's fragment (never sent to a server); it is kept
// for this tab only and taken out of the address bar.
const hashToken = new URLSearchParams(location.hash.slice(1)).get('token');
if (hashToken) {
  sessionStorage.setItem('patchwire-token', hashToken);
  history.replaceState(null, '', location.pathname);
}
let token = sessionStorage.getItem('patchwire-token') || '';

const state = {
  view: null,
  /** wire end names chosen for capture */
  selectedEnds: new Set(),
  /** the wire whose details and packets are shown */
  wire: null,
  packets: [],
  packetStream: null,
  topologyKey: '',
};

function toast(msg, bad = false) {
  const t = $('#toast');
  t.textContent = msg;
  t.className = bad ? 'show bad' : 'show';
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ''), bad ? 8000 : 3000);
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), authorization: `Bearer ${token}` } });
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      msg = (await res.json()).error || msg;
    } catch {
      /* not JSON */
    }
    if (res.status === 401) showLogin();
    throw new Error(msg);
  }
  return res;
}

/** Reads server-sent events from a fetch body (EventSource cannot send a header). */
async function sse(path, onEvent, signal) {
  const res = await api(path, { signal });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length) onEvent(event, JSON.parse(data.join('\n')));
    }
  }
}

function showLogin() {
  $('#login').hidden = false;
}

$('#login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('#token-input').value.trim();
  sessionStorage.setItem('patchwire-token', token);
  $('#login').hidden = true;
  followView();
});

/** Asks before anything that changes the lab; resolves true on Confirm. */
function confirmAction(text) {
  const d = $('#confirm');
  $('#confirm-text').textContent = text;
  d.returnValue = '';
  d.showModal();
  return new Promise((resolve) => d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true }));
}

// ---- formatting -----------------------------------------------------------

function rate(bps) {
  if (!bps) return '0';
  for (const [f, u] of [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']]) if (bps >= f) return `${(bps / f).toFixed(1)}${u}`;
  return `${Math.round(bps)}`;
}

/** up, pulled, down or unknown: what colours a wire. */
function wireLook(w) {
  if (w.ends.some((e) => e.cable === 'pulled')) return 'pulled';
  if (w.state === 'missing' || w.ends.some((e) => e.carrier === 'unknown')) return 'unknown';
  if (w.state !== 'up' || w.ends.some((e) => e.carrier === 'down')) return 'down';
  return 'up';
}

const wireDrops = (w) => w.ends.reduce((a, e) => a + (e.drops_total || 0), 0);
const wireLabel = (w) => `${rate(w.ends[0].rx_bps)}→ ←${rate(w.ends[1].rx_bps)} bit/s${wireDrops(w) ? ` · ${wireDrops(w)} drop${wireDrops(w) === 1 ? '' : 's'}` : ''}`;

// ---- graph ----------------------------------------------------------------

const NODE_TINTS = ['#dde6f3', '#e6f0dc', '#f3e6dd', '#ece1f3', '#f3f0d6', '#dcf0ef'];
const COLORS = { up: '#2e9d4a', pulled: '#d33c3c', down: '#e08a1e', unknown: '#8a8f98' };

const cy = cytoscape({
  container: $('#graph'),
  wheelSensitivity: 0.3,
  // A small lab is not blown up to fill the pane.
  minZoom: 0.2,
  maxZoom: 1.4,
  style: [
    { selector: 'node', style: { label: 'data(label)', 'text-wrap': 'wrap', 'text-valign': 'center', 'text-halign': 'center', 'background-color': 'data(tint)', 'border-width': 1, 'border-color': '#5b6f8f', shape: 'round-rectangle', width: 78, height: 40, 'font-size': 13 } },
    {
      selector: 'edge',
      style: {
        width: 4,
        'curve-style': 'bezier',
        'line-color': (e) => COLORS[e.data('look')] || COLORS.unknown,
        'line-style': (e) => (e.data('look') === 'pulled' ? 'dashed' : 'solid'),
        label: 'data(label)',
        'font-size': 11,
        'text-background-color': '#fff',
        'text-background-opacity': 0.85,
        'text-background-padding': 2,
        'source-label': 'data(a)',
        'target-label': 'data(b)',
        'source-text-offset': 30,
        'target-text-offset': 30,
      },
    },
    { selector: 'edge:selected', style: { width: 7, 'overlay-color': '#3b6fd8', 'overlay-opacity': 0.15 } },
  ],
});
cy.on('tap', 'edge', (ev) => selectWire(Number(ev.target.data('uid'))));
// Exposed for the page's tests and for poking at from the console.
window.pwui = { cy, state };

function drawGraph(v) {
  const key = JSON.stringify([v.pods.map((p) => [p.name, p.node]), v.wires.map((w) => [w.uid, w.ends.map((e) => e.name)])]);
  const fresh = key !== state.topologyKey;
  if (fresh) {
    state.topologyKey = key;
    cy.elements().remove();
    // Pods coloured by the node (daemon) that holds them; the name says which.
    const labNodes = [...new Set(v.pods.map((p) => p.node))].sort();
    cy.add(v.pods.map((p) => ({ group: 'nodes', data: { id: `pod:${p.name}`, label: `${p.name}\n${p.node}`, tint: NODE_TINTS[labNodes.indexOf(p.node) % NODE_TINTS.length] } })));
  }
  for (const w of v.wires) {
    const data = { id: `wire:${w.uid}`, uid: w.uid, source: `pod:${w.ends[0].pod}`, target: `pod:${w.ends[1].pod}`, a: w.ends[0].name.split('/').pop(), b: w.ends[1].name.split('/').pop(), look: wireLook(w), state: w.state, cable: w.ends.some((e) => e.cable === 'pulled') ? 'pulled' : 'plugged', label: wireLabel(w) };
    const e = cy.getElementById(data.id);
    if (e.nonempty()) e.data(data);
    else cy.add({ group: 'edges', data });
  }
  if (fresh) {
    // A few pods read best on a circle; more get a force-directed layout.
    const few = v.pods.length <= 8;
    cy.layout(few ? { name: 'circle', animate: false, padding: 70, startAngle: -Math.PI / 2 } : { name: 'cose', animate: false, randomize: true, padding: 50, nodeRepulsion: () => 400000, idealEdgeLength: () => 180 }).run();
  }
  if (state.wire !== null) cy.getElementById(`wire:${state.wire}`).select();
}

// ---- wire table, selection, capture -----------------------------------------

function drawWires(v) {
  const body = $('#wires tbody');
  // Rebuilt only when something shown changed (a row under the pointer stays put).
  const key = JSON.stringify([state.wire, [...state.selectedEnds], v.wires.map((w) => [w.uid, w.state, wireLook(w), w.ends.map((e) => [e.name, e.rx_bps, e.drops_total])])]);
  if (key === drawWires.key) return;
  drawWires.key = key;
  body.replaceChildren(
    ...v.wires.map((w) => {
      const tr = document.createElement('tr');
      tr.dataset.uid = w.uid;
      tr.className = `look-${wireLook(w)}${state.wire === w.uid ? ' current' : ''}`;
      const pick = document.createElement('td');
      for (const e of w.ends) {
        const box = document.createElement('input');
        box.type = 'checkbox';
        box.title = `capture ${e.name}`;
        box.dataset.end = e.name;
        box.checked = state.selectedEnds.has(e.name);
        box.addEventListener('click', (ev) => {
          ev.stopPropagation();
          if (box.checked) state.selectedEnds.add(e.name);
          else state.selectedEnds.delete(e.name);
          drawCapture();
        });
        pick.append(box);
      }
      const cells = [`${w.uid}`, w.ends.map((e) => e.name).join(' ↔ '), wireLook(w) === 'pulled' ? 'cable pulled' : w.state === 'up' && wireLook(w) === 'down' ? 'no carrier' : w.state, `${rate(w.ends[0].rx_bps)} / ${rate(w.ends[1].rx_bps)}`, `${wireDrops(w)}`];
      tr.append(pick, ...cells.map((c, i) => {
        const td = document.createElement('td');
        td.textContent = c;
        if (i === 2) td.className = 'state';
        return td;
      }));
      tr.addEventListener('click', () => selectWire(w.uid));
      return tr;
    }),
  );
}

function captureQuery() {
  return [...state.selectedEnds].map((e) => `end=${encodeURIComponent(e)}`).join('&');
}

function drawCapture() {
  const n = state.selectedEnds.size;
  $('#selected-ends').textContent = n ? [...state.selectedEnds].join(', ') : 'select wire ends above';
  $('#download').disabled = n === 0;
  $('#copy-live').disabled = n === 0;
  const v = state.view;
  const url = new URL(`api/capture?${captureQuery()}&follow=1`, document.baseURI);
  // A daemon's page in a cluster takes a Kubernetes token ($TOKEN: kubectl create token ...).
  $('#live-command').value = !n || !v
    ? ''
    : v.mode === 'cluster'
      ? `curl -sN -H "Authorization: Bearer $TOKEN" '${url}' | wireshark -k -i -`
      : `curl -sN -H "Authorization: Bearer $(sudo cat ${v.token_file})" '${url}' | wireshark -k -i -\n# or: sudo patchwire capture ${v.lab} ${[...state.selectedEnds].join(' ')} --follow | wireshark -k -i -`;
}

$('#download').addEventListener('click', async () => {
  try {
    const res = await api(`api/capture?${captureQuery()}`);
    const blob = await res.blob();
    const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '')?.[1] || 'capture.pcapng';
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    toast(`downloaded ${name} (${blob.size} bytes)`);
  } catch (err) {
    toast(`download failed: ${err.message}`, true);
  }
});

$('#copy-live').addEventListener('click', async () => {
  const text = $('#live-command').value.split('\n')[0];
  try {
    await navigator.clipboard.writeText(text);
    toast('command copied');
  } catch {
    // No clipboard permission: leave it selected for Ctrl-C.
    $('#live-command').select();
    toast('press Ctrl-C to copy the selected command');
  }
});

// ---- one wire: details, cable, impairments, packets -------------------------

function selectWire(uid) {
  if (state.wire !== uid) {
    state.wire = uid;
    followPackets();
  }
  if (state.view) render(state.view);
}

function drawDetail(v) {
  const w = v.wires.find((x) => x.uid === state.wire);
  $('#wire-detail').hidden = !w;
  if (!w) return;
  const key = JSON.stringify(w);
  if (key === drawDetail.key) return;
  drawDetail.key = key;
  $('#detail-uid').textContent = `${w.uid}: ${w.ends.map((e) => e.name).join(' ↔ ')}`;
  $('#detail-ends').replaceChildren(
    ...w.ends.map((e) => {
      const div = document.createElement('div');
      div.className = 'end';
      div.dataset.end = e.name;
      const pulled = e.cable === 'pulled';
      div.innerHTML = '<b></b> <span class="where"></span><br><span class="carrier"></span> · cable <span class="cable"></span><br><span class="counters"></span><br><span class="impair"></span><br>';
      div.querySelector('b').textContent = e.name;
      div.querySelector('.where').textContent = `on ${e.node}`;
      div.querySelector('.carrier').textContent = `carrier ${e.carrier}`;
      div.querySelector('.cable').textContent = e.cable;
      div.querySelector('.counters').textContent = `rx ${e.rx_frames ?? 0} frames, tx ${e.tx_frames ?? 0} frames, ${e.drops_total ?? 0} dropped${e.drops_total ? ` (${Object.entries(e.drops).filter(([, n]) => n > 0).map(([c, n]) => `${c} ${n}`).join(', ')})` : ''}`;
      div.querySelector('.impair').textContent = `impairments: in ${e.impair_in || 'none'}; out ${e.impair_out || 'none'}`;
      const b = document.createElement('button');
      b.className = pulled ? 'plug' : 'pull';
      b.textContent = pulled ? 'Plug cable…' : 'Pull cable…';
      b.addEventListener('click', () => cable(e.name, pulled));
      div.append(b);
      return div;
    }),
  );
  const sel = $('#impair-end');
  const keep = sel.value;
  sel.replaceChildren(...w.ends.map((e) => new Option(e.name, e.name)));
  if (w.ends.some((e) => e.name === keep)) sel.value = keep;
}

async function post(path, body) {
  const res = await api(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return res.json();
}

async function cable(end, plug) {
  const ok = await confirmAction(plug ? `Plug the cable of ${end}'s link back in? Both ends get carrier again.` : `Pull the cable at ${end}? Both ends of the link lose carrier; frames in flight are dropped as cable_pulled.`);
  if (!ok) return;
  try {
    await post('api/cable', { end, plugged: plug });
    toast(plug ? `cable of ${end} plugged in` : `cable pulled at ${end}`);
  } catch (err) {
    toast(`${plug ? 'plug' : 'pull'} failed: ${err.message}`, true);
  }
}

$('#impair-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const end = $('#impair-end').value;
  const dir = $('#impair-dir').value;
  const set = {};
  for (const k of ['delay', 'jitter', 'loss', 'rate']) if ($(`#impair-${k}`).value.trim()) set[k] = $(`#impair-${k}`).value.trim();
  const what = Object.entries(set).map(([k, v]) => `${k} ${v}`).join(', ') || 'nothing';
  if (!(await confirmAction(`Set impairments on ${end} (${dir}): ${what}? This replaces what is set there now.`))) return;
  try {
    const r = await post('api/impair', { end, dir, set });
    toast(`${end}: in ${r.impair_in || 'none'}; out ${r.impair_out || 'none'}`);
  } catch (err) {
    toast(`impairments not set: ${err.message}`, true);
  }
});

$('#impair-reset').addEventListener('click', async () => {
  const end = $('#impair-end').value;
  const dir = $('#impair-dir').value;
  if (!(await confirmAction(`Remove the impairments of ${end} (${dir})?`))) return;
  try {
    await post('api/impair', { end, dir, reset: true });
    toast(`${end}: impairments removed`);
  } catch (err) {
    toast(`reset failed: ${err.message}`, true);
  }
});

function fmtTime(us) {
  const d = new Date(us / 1000);
  return `${d.toTimeString().slice(0, 8)}.${String(us % 1e6).padStart(6, '0')}`;
}

function addPackets(frames) {
  if ($('#packets-pause').checked) return;
  const body = $('#packet-list tbody');
  const rows = frames.slice(-MAX_PACKETS).map((f) => {
    const tr = document.createElement('tr');
    tr.className = `dir-${f.dir}`;
    for (const c of [fmtTime(f.ts_us), f.end, f.dir, f.src, f.dst, f.ethertype, f.proto, f.info, String(f.len)]) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.append(td);
    }
    return tr;
  });
  body.append(...rows);
  while (body.rows.length > MAX_PACKETS) body.deleteRow(0);
  const scroll = $('#packets .scroll');
  scroll.scrollTop = scroll.scrollHeight;
}

function followPackets() {
  state.packetStream?.abort();
  $('#packet-list tbody').replaceChildren();
  const v = state.view;
  const w = v?.wires.find((x) => x.uid === state.wire);
  if (!w) return;
  $('#packets-of').textContent = `wire ${w.uid}: ${w.ends.map((e) => e.name).join(' ↔ ')} (the last ${MAX_PACKETS} frames)`;
  const ctl = new AbortController();
  state.packetStream = ctl;
  // A daemon's page in a cluster lists the frames of the ends on its own node.
  const ends = v.mode === 'cluster' ? w.ends.filter((e) => e.node === v.node) : w.ends;
  if (ends.length === 0) {
    $('#packets-of').textContent = `wire ${w.uid}: no end on node ${v.node} (open the page of the daemon that holds it)`;
    return;
  }
  const q = ends.map((e) => `end=${encodeURIComponent(e.name)}`).join('&');
  sse(`api/packets?${q}`, (event, data) => {
    if (event === 'frames') addPackets(data.frames);
    else if (event === 'error') toast(data.error, true);
  }, ctl.signal).catch((err) => {
    if (err.name !== 'AbortError') toast(`packet list: ${err.message}`, true);
  });
}

// ---- the view stream --------------------------------------------------------

function render(v) {
  state.view = v;
  $('#lab-name').textContent = v.mode === 'cluster' ? `${v.lab} (node ${v.node})` : v.lab;
  if (v.token_file) $('#token-hint').textContent = `sudo cat ${v.token_file}`;
  drawGraph(v);
  drawWires(v);
  drawCapture();
  drawDetail(v);
  const down = v.nodes.filter((n) => !n.reporting).map((n) => n.name);
  $('#status').textContent = `${v.wires.length} wires · ${v.pods.length} pods · ${v.nodes.length} nodes${down.length ? ` · not reporting: ${down.join(', ')}` : ''} · ${new Date(v.time_ms).toLocaleTimeString()}`;
  $('#status').className = down.length ? 'status bad' : 'status live';
}

// A browser opens at most six HTTP/1.1 connections to one server, and each
// open tab holds two streams: a hidden tab lets go of its streams and takes
// them up again when shown.
let viewStream = null;
async function followView() {
  if (viewStream || document.hidden) return;
  const ctl = new AbortController();
  viewStream = ctl;
  try {
    while (!ctl.signal.aborted) {
      try {
        await sse('api/events', (event, data) => event === 'view' && render(data), ctl.signal);
        $('#status').textContent = 'stream ended; reconnecting…';
      } catch (err) {
        if (ctl.signal.aborted) return;
        $('#status').textContent = `${err.message}; retrying…`;
        $('#status').className = 'status bad';
        if (!token || /token/.test(err.message)) {
          showLogin();
          return;
        }
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  } finally {
    if (viewStream === ctl) viewStream = null;
  }
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    viewStream?.abort();
    viewStream = null;
    state.packetStream?.abort();
    state.packetStream = null;
    $('#status').textContent = 'paused while the tab is hidden';
  } else if (token) {
    followView();
    if (state.wire !== null) followPackets();
  }
});

if (token) followView();
else showLogin();
