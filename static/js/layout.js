// Pure layout: where process boxes and pipe tubes go, in columns for pipelines, else on a circle.

import { byName, edgesOf, endPid, ranksOf } from './topology.js';

const MAX_COLUMNS = 6;
const MAX_PER_COLUMN = 8;
const MIN_STAGE_W = 240; // a box plus a pipe long enough to show a few messages

export { endPid, processOrder } from './topology.js';

/**
 * Lay out a run's processes and pipes in a width × height box.
 * Returns {kind: 'columns'|'snake'|'circle', boxes: {pid: {x, y, w, h}} (centres),
 * pipes: {id: {a: pid, b: pid, extra: {a: [pid], b: [pid]}, slot, slots}}}.
 * Parallel pipes between one pair of processes get slots so they can be drawn side by side.
 */
export function layoutRun(state, width, height) {
  const pids = Object.values(state.processes)
    .sort((p, q) => p.order - q.order).map((p) => p.pid);
  const edges = edgesOf(state);
  const linked = new Set(edges.flat());
  // Processes with no pipe to another process (a parent that only starts and joins) go in a
  // strip along the top, so the pipes get the room.
  const strip = linked.size ? pids.filter((p) => !linked.has(p)) : [];
  const main = linked.size ? pids.filter((p) => linked.has(p)) : pids;
  const stripH = strip.length ? 60 : 0;
  const boxes = {};
  strip.forEach((pid, i) => {
    const w = Math.min(150, (width - 16) / strip.length - 12);
    boxes[pid] = { x: ((i + 0.5) * width) / strip.length, y: stripH / 2 + 2, w, h: 48 };
  });
  const kind = placeMain(boxes, main, edges, width, height - stripH, stripH, byName(state));
  const pipes = {};
  const pairs = new Map();
  for (const pipe of Object.values(state.pipes).sort((p, q) => p.order - q.order)) {
    const a = endPid(pipe.ends.a);
    const b = endPid(pipe.ends.b);
    const key = [a, b].sort().join('|');
    const slot = pairs.get(key) || 0;
    pairs.set(key, slot + 1);
    const extra = {
      a: pipe.ends.a.pids.filter((p) => p !== a && pipe.ends.a.open.includes(p)),
      b: pipe.ends.b.pids.filter((p) => p !== b && pipe.ends.b.open.includes(p)),
    };
    pipes[pipe.id] = { a, b, extra, slot, key, lanes: Object.keys(pipe.lanes).length };
  }
  for (const p of Object.values(pipes)) p.slots = pairs.get(p.key);
  if (kind !== 'circle') assignPorts(boxes, pipes, height - stripH);
  return { kind, boxes, pipes, width, height };
}

// In columns every pipe leaves a box sideways: spread the pipes on each side of a box along
// that side (growing the box when it has many), ordered by where their other end is.
function assignPorts(boxes, pipes, height) {
  const sides = new Map();
  for (const [id, lp] of Object.entries(pipes)) {
    const ba = boxes[lp.a];
    const bb = boxes[lp.b];
    if (!ba || !bb || lp.a === lp.b || ba.x === bb.x) continue;
    for (const [end, box, other] of [['a', ba, bb], ['b', bb, ba]]) {
      const key = `${end === 'a' ? lp.a : lp.b}|${other.x > box.x ? 1 : -1}`;
      if (!sides.has(key)) sides.set(key, []);
      sides.get(key).push({ id, end, box, other });
    }
  }
  const perColumn = new Map();
  for (const box of Object.values(boxes)) perColumn.set(box.x, (perColumn.get(box.x) || 0) + 1);
  for (const [key, ports] of sides) {
    const dir = Number(key.split('|')[1]);
    const box = ports[0].box;
    const room = height / perColumn.get(box.x) - 14;
    // Each tube needs its lanes plus room for its gauges beside it.
    const pitch = (p) => pipes[p.id].lanes * 26 + 26;
    const total = ports.reduce((sum, p) => sum + pitch(p), 0);
    box.h = Math.max(box.h, Math.min(room, total));
    const scale = Math.min(1, (box.h - 6) / total);
    ports.sort((p, q) => p.other.y - q.other.y || p.id.localeCompare(q.id));
    let y = box.y - (total * scale) / 2;
    for (const p of ports) {
      const dy = ports.length === 1 ? 0 : y + (pitch(p) * scale) / 2 - box.y;
      (pipes[p.id].ports ||= {})[p.end] = { x: box.x + dir * (box.w / 2 + 10), y: box.y + dy };
      y += pitch(p) * scale;
    }
  }
}

// The rows of a snake that leave the shortest pipe, across or down, as long as it can be.
function snakeShape(n, width, height) {
  let best = null;
  for (let perRow = 2; perRow <= n; perRow += 1) {
    const rows = Math.ceil(n / perRow);
    const bw = Math.max(80, Math.min(120, (width / perRow) * 0.45));
    const bh = Math.max(38, Math.min(54, (height / rows) * 0.5));
    const pipe = Math.min(width / perRow - bw, rows > 1 ? height / rows - bh : Infinity);
    if (!best || pipe > best.pipe) best = { perRow, rows, bw, bh, pipe };
  }
  return best;
}

function placeMain(boxes, pids, edges, width, height, top, named) {
  const n = pids.length;
  const rank = ranksOf(pids, edges);
  const columns = [];
  for (const p of pids) (columns[rank.get(p)] ||= []).push(p);
  const cols = columns.filter(Boolean);
  const fits = cols.length <= MAX_COLUMNS && cols.every((c) => c.length <= MAX_PER_COLUMN);
  // Columns read well only when every pipe joins neighbouring columns: a pipe that skips a
  // column or runs backwards would cross the boxes between, so those graphs go on a circle.
  const adjacent = edges.every(([f, t]) => !rank.has(f) || !rank.has(t)
    || rank.get(t) - rank.get(f) === 1 || f === t);
  const chain = cols.length > 1 && cols.every((c) => c.length === 1); // a pipeline
  const kind = n <= 2 || ((fits || chain) && adjacent && cols.length > 1) ? 'columns' : 'circle';
  const across = kind === 'columns' ? cols.length * 1.8 : Math.sqrt(n) * 2.6;
  const tall = kind === 'columns' ? Math.max(...cols.map((c) => c.length)) : n / 2;
  // Many processes get compact boxes (name and pid; the border shows a wait) so pipes keep room.
  const compact = n > 8 || tall > 7;
  const w = compact ? 88 : Math.max(96, Math.min(170, width / Math.max(2, across)));
  const h = compact ? 38 : Math.max(48, Math.min(64, height / (tall + 1) - 14));
  if (kind === 'columns' && chain && cols.length > Math.max(2, Math.floor(width / MIN_STAGE_W))) {
    // A long chain: wrap it into rows, each row running the other way (a snake), so every
    // pipe keeps room for its queue.
    const { perRow, rows, bw, bh } = snakeShape(cols.length, width, height);
    const slotW = width / perRow;
    cols.forEach(([pid], i) => {
      const row = Math.floor(i / perRow);
      const k = row % 2 ? perRow - 1 - (i % perRow) : i % perRow;
      boxes[pid] = { x: slotW * (k + 0.5), y: top + ((row + 0.5) * height) / rows, w: bw, h: bh };
    });
    return 'snake';
  }
  if (kind === 'columns') {
    const padX = w / 2 + 16;
    cols.forEach((col, i) => {
      col.sort(named); // by name, as the sequence chart lists them (topology.processOrder)
      const x = cols.length === 1 ? width / 2 : padX + (i * (width - 2 * padX)) / (cols.length - 1);
      col.forEach((pid, j) => {
        boxes[pid] = { x, y: top + ((j + 1) * height) / (col.length + 1), w, h };
      });
    });
    return kind;
  }
  // An ellipse filling the area: boxes are wider than tall, so it spreads them evenly.
  const rx = Math.max(60, width / 2 - w / 2 - 16);
  const ry = Math.max(40, height / 2 - h / 2 - 24);
  pids.forEach((pid, i) => {
    const angle = Math.PI + (2 * Math.PI * i) / n; // the first process on the left
    boxes[pid] = { x: width / 2 + rx * Math.cos(angle), y: top + height / 2 + ry * Math.sin(angle), w, h };
  });
  return kind;
}

/** Where the segment from the centre of box to (tx, ty) leaves the box's border. */
export function boxExit(box, tx, ty, margin = 0) {
  const dx = tx - box.x;
  const dy = ty - box.y;
  const hw = box.w / 2 + margin;
  const hh = box.h / 2 + margin;
  if (dx === 0 && dy === 0) return { x: box.x + hw, y: box.y };
  const s = Math.min(Math.abs(dx) > 1e-9 ? hw / Math.abs(dx) : Infinity,
    Math.abs(dy) > 1e-9 ? hh / Math.abs(dy) : Infinity);
  return { x: box.x + dx * s, y: box.y + dy * s };
}

export const QUEUE_GAP = 3; // px between two messages in a lane
export const MIN_TOKEN_W = 20; // a message squeezed this narrow still reads as one

// `ws` shrunk alike by the largest factor (at most 1) that fits them, gaps included, in
// `room`, none below MIN_TOKEN_W; null when even that does not fit.
function squeeze(ws, room) {
  if (ws.length * (MIN_TOKEN_W + QUEUE_GAP) - QUEUE_GAP > room) return null;
  const need = (s) => ws.reduce((sum, w) => sum + Math.max(MIN_TOKEN_W, w * s) + QUEUE_GAP, -QUEUE_GAP);
  const fits = (s) => need(s) <= room;
  let [lo, hi] = [fits(1) ? 1 : 0, 1];
  while (hi - lo > 1e-4) [lo, hi] = fits((lo + hi) / 2) ? [(lo + hi) / 2, hi] : [lo, (lo + hi) / 2];
  return ws.map((w) => Math.max(MIN_TOKEN_W, w * lo));
}

/**
 * A lane's queue, oldest first, `room` px long from its reading end: each message at its own
 * width when all fit, else all shrunk alike (to MIN_TOKEN_W at least), else as many of the
 * oldest as fit and, at the writing end clear of them, a chip chipWidth(k) px wide counting
 * the k others. `total` messages are queued: `widths` may stop once more than fit.
 * Returns {slots: [{d, w}] (d: the centre's distance from the reading end), more, chip: {d, w} | null}.
 */
export function layoutQueue(widths, room, chipWidth = () => 0, total = widths.length) {
  let shown = total === widths.length ? squeeze(widths, room) : null;
  let chip = null;
  if (!shown && total) {
    let n = Math.min(widths.length, Math.floor(room / (MIN_TOKEN_W + QUEUE_GAP)));
    while (n > 1 && n * (MIN_TOKEN_W + QUEUE_GAP) + chipWidth(total - n) > room) n -= 1;
    n = Math.max(1, n);
    const w = chipWidth(total - n);
    if (n * (MIN_TOKEN_W + QUEUE_GAP) + w <= room) chip = { d: room - w / 2, w };
    shown = squeeze(widths.slice(0, n), chip ? room - w - QUEUE_GAP : room) ?? [Math.min(room, MIN_TOKEN_W)];
  }
  let d = 0;
  const slots = (shown ?? []).map((w) => {
    d += w + QUEUE_GAP;
    return { d: d - QUEUE_GAP - w / 2, w };
  });
  return { slots, more: total - slots.length, chip };
}
