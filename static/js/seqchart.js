// Sequence chart: one lifeline per process, an arrow from each send to its recv, waits as bars.

import { processOrder } from './layout.js';
import { withDefaults } from './liveview_text.js';
import { processColour } from './render_process.js';
import { ROW_H, buildRows, receiverOf, timeLabels, yOfTime } from './seqchart_rows.js';

const SVG = 'http://www.w3.org/2000/svg';
const COL_W = [56, 170]; // lifelines share the panel's width; below 56 px the chart scrolls sideways
const LEFT = 64; // room for the time column
const HEAD_H = 34;

// Text and attribute values put into markup: every character that could end either.
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const cut = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
// A name cut in its middle keeps its end, which tells "producer-0" from "producer-1".
const cutMiddle = (s, n) => (s.length > n
  ? `${s.slice(0, Math.ceil(n / 2) - 1)}…${s.slice(s.length - Math.floor(n / 2))}` : s);

// One SVG element as text; attribute values and text are escaped.
function tag(name, attrs, inner = '') {
  const list = Object.entries(attrs).map(([k, v]) => ` ${k}="${esc(v)}"`).join('');
  return `<${name}${list}>${inner}</${name}>`;
}

const DEFS = tag('defs', {}, tag('marker', { id: 'seq-arrow', viewBox: '0 0 10 10', refX: 9,
  refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
tag('path', { d: 'M0,0 L10,5 L0,10 z', fill: 'context-stroke' })));

function waitBar(x, y0, y1, cls, title) {
  return tag('rect', { class: cls, x: x - 4, y: y0, width: 8, height: y1 - y0 },
    title ? tag('title', {}, esc(title)) : '');
}

function arrow(state, tk, x0, x1, y0, y1, tt) {
  const room = Math.max(6, Math.floor(Math.abs(x1 - x0) / 7) - 2); // characters that fit
  const queued = tk.status !== 'delivered';
  const cls = tk.corrupt ? 'seq-msg seq-corrupt' : queued ? 'seq-msg seq-queued' : 'seq-msg';
  const colour = tk.corrupt ? '#dc2626' : processColour(state.processes[tk.fromPid]);
  const label = `${tk.corrupt ? '✕ ' : ''}${cut(tk.preview || tk.type || '', Math.min(room, 28))}`;
  const tip = [tk.preview, `${tk.nbytes} B`, tk.corrupt, queued ? tt('seq_queued') : null]
    .filter(Boolean).join(' · ');
  return tag('g', { class: cls, 'data-seq': tk.seq }, tag('title', {}, esc(tip))
    + tag('line', { x1: x0, y1: y0, x2: x1, y2: y1, stroke: colour,
      'marker-end': 'url(#seq-arrow)' })
    + tag('text', { x: (x0 + x1) / 2, y: (y0 + y1) / 2 - 5, fill: colour }, esc(label)));
}

function render(state, tt, avail) {
  const procs = processOrder(state); // as the live view lays them out, along the pipes
  const colW = Math.max(COL_W[0], Math.min(COL_W[1], (avail - LEFT) / Math.max(1, procs.length)));
  const col = new Map(procs.map((p, i) => [p.pid, LEFT + colW / 2 + i * colW]));
  const { tokens, marks, rows, index } = buildRows(state);
  const width = Math.floor(LEFT + procs.length * colW);
  const height = Math.max(60, 24 + rows.length * ROW_H);
  const y = (seq) => 12 + index.get(seq) * ROW_H;
  const parts = [DEFS];
  timeLabels(rows, state.t0).forEach((label, i) => {
    const cls = label.back ? 'seq-time seq-time-back' : 'seq-time';
    const at = { class: cls, x: LEFT - 8, y: y(rows[i].seq) + 4 };
    const text = tag('text', at, esc(label.text));
    const tip = label.back ? `${label.title} · ${tt('seq_clock')}` : label.title;
    parts.push(tip ? tag('g', {}, tag('title', {}, esc(tip)) + text) : text);
  });
  for (const p of procs) {
    const x = col.get(p.pid);
    const stroke = processColour(p);
    parts.push(tag('line', { class: 'seq-life', x1: x, y1: 0, x2: x, y2: height, stroke }));
  }
  const first = rows.length ? rows[0].t : Infinity;
  for (const s of state.spans) {
    if (!col.has(s.pid) || s.until < first) continue;
    const [y0, y1] = [yOfTime(rows, s.since), yOfTime(rows, s.until)];
    const key = s.op === 'send' || s.op === 'send_bytes' ? 'blocked_send' : 'blocked_recv';
    const title = `${tt(key)} ${((s.until - s.since) / 1e6).toFixed(1)} ms`;
    if (y1 - y0 >= 2) parts.push(waitBar(col.get(s.pid), y0, y1, 'seq-wait', title));
  }
  for (const p of procs) {
    if (!p.blocked || !rows.length) continue;
    const y0 = yOfTime(rows, p.blocked.since);
    parts.push(waitBar(col.get(p.pid), y0, Math.max(y0 + 8, height), 'seq-wait seq-wait-now'));
  }
  for (const tk of tokens) {
    const x0 = col.get(tk.fromPid);
    const x1 = col.get(receiverOf(state, tk));
    if (x0 == null || x1 == null || !index.has(tk.seq)) continue;
    const y1 = tk.status !== 'delivered' ? height - 6 : y(tk.recvSeq);
    parts.push(arrow(state, tk, x0, x1, y(tk.seq), y1, tt));
  }
  for (const m of marks) {
    const x = col.get(m.pid);
    if (x == null || !index.has(m.seq)) continue;
    const yy = y(m.seq);
    // Told on the side with room (left of the last lifeline), cut to it short of the time
    // column; whole on hover.
    const full = `${m.text} ${m.end}`;
    const [right, leftRoom] = [width - x - 11, x - 11 - LEFT];
    const left = full.length * 6.5 > right && leftRoom > right;
    const text = cut(full, Math.max(4, Math.floor((left ? leftRoom : right) / 6.5)));
    parts.push(tag('g', { class: `seq-mark seq-${m.kind}` }, tag('title', {}, esc(full))
      + tag('line', { x1: x - 8, y1: yy, x2: x + 8, y2: yy })
      + tag('text', { x: left ? x - 11 : x + 11, y: yy + 4, 'text-anchor': left ? 'end' : 'start' },
        esc(text))));
  }
  const narrow = colW < 90; // names in a smaller type, so "producer-0" still fits its column
  const head = procs.map((p) => tag('g', {}, tag('title', {}, esc(p.name))
    + tag('text', { class: narrow ? 'seq-name seq-name-narrow' : 'seq-name', x: col.get(p.pid), y: 14,
      fill: processColour(p) }, esc(cutMiddle(p.name, Math.floor((colW - 10) / (narrow ? 5 : 6)))))
    + tag('text', { class: 'seq-pid', x: col.get(p.pid), y: 28 }, esc(`pid ${p.pid}`)))).join('');
  const empty = !tokens.length && !marks.length;
  return { width, height, head, body: parts.join(''), empty, nameRoom: colW - 10 };
}

// A name a little wider than its column is narrowed to fit (measured: the type's widths vary).
function fitNames(head, room) {
  for (const name of head.querySelectorAll('.seq-name')) {
    if (name.getComputedTextLength() <= room) continue;
    name.setAttribute('textLength', room);
    name.setAttribute('lengthAdjust', 'spacingAndGlyphs');
  }
}

/**
 * Create the sequence chart inside `container`.
 * update(state) redraws from the run model when it changed, at most every `minIntervalMs`
 * (a later redraw catches up); the newest message stays in view unless the reader scrolled up.
 */
export function createSequenceChart(container, { t, now = () => performance.now(),
  minIntervalMs = 200 } = {}) {
  const tt = withDefaults(t);
  const element = document.createElement('div');
  element.className = 'seqchart';
  element.innerHTML = `<svg class="seqchart-head" xmlns="${SVG}" height="${HEAD_H}"></svg>`
    + '<div class="seqchart-body"><svg xmlns="http://www.w3.org/2000/svg"></svg></div>'
    + '<p class="seqchart-empty"></p>';
  container.append(element);
  const head = element.querySelector('.seqchart-head');
  const body = element.querySelector('.seqchart-body');
  const svg = body.querySelector('svg');
  const empty = element.querySelector('.seqchart-empty');
  let signature = '';
  let drawnAt = -Infinity;
  let timer = null;
  const onScroll = () => { head.style.transform = `translateX(${-body.scrollLeft}px)`; };
  body.addEventListener('scroll', onScroll);
  const api = {
    element,
    update(state) {
      const avail = body.clientWidth || container.clientWidth || 420;
      const sig = `${state.counts.events}|${Object.keys(state.processes).length}|${state.status}|${avail}`;
      if (sig === signature) return;
      const wait = drawnAt + minIntervalMs - now();
      if (wait > 0) {
        // Rebuilding the chart costs tens of ms: under a flood, redraw a few times a second.
        clearTimeout(timer);
        timer = setTimeout(() => api.update(state), wait);
        return;
      }
      clearTimeout(timer);
      signature = sig;
      drawnAt = now();
      const atBottom = body.scrollTop + body.clientHeight >= body.scrollHeight - 30;
      const out = render(state, tt, avail);
      head.setAttribute('width', out.width);
      head.innerHTML = out.head;
      fitNames(head, out.nameRoom);
      svg.setAttribute('width', out.width);
      svg.setAttribute('height', out.height);
      svg.innerHTML = out.body;
      empty.textContent = out.empty ? tt('seq_empty') : '';
      element.dataset.messages = String(svg.querySelectorAll('.seq-msg').length);
      if (atBottom) body.scrollTop = body.scrollHeight;
    },
    destroy() {
      clearTimeout(timer);
      body.removeEventListener('scroll', onScroll);
      element.remove();
    },
  };
  return api;
}
