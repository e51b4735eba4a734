// Canvas drawing of the messages (tokens) queued in a lane and of those leaving it.

import { COLOURS, fitText, roundRect } from './render_process.js';
import { MIN_TOKEN_W, QUEUE_GAP, layoutQueue } from './layout.js';
import { LANE_W, laneRoom, laneX } from './render_tube.js';

const TOKEN_FONT = '600 10px ui-monospace, monospace';
const CHIP_FONT = '600 10px system-ui, sans-serif';
const LABEL_MIN_W = 34; // narrower, a message shows no label: two characters and "…" say nothing
const EASE_MS = 90; // how quickly a token slides to its place in the queue
export const LEAVE_MS = 450;
export const CORRUPT_LEAVE_MS = 1100; // a corrupt frame lingers a little so it is noticed

/** Token length along the lane: grows with the log of its size, so 1 B and 1 MiB both fit. */
export function tokenWidth(nbytes) {
  return Math.max(28, Math.min(150, 28 + 10 * Math.log2(1 + (nbytes || 0) / 8)));
}

function drawToken(ctx, token, x, y, w, colour, alpha) {
  const h = LANE_W - 6;
  ctx.globalAlpha = alpha;
  roundRect(ctx, x - w / 2, y - h / 2, w, h, Math.min(5, w / 2));
  ctx.fillStyle = token.corrupt ? COLOURS.corrupt : colour;
  ctx.fill();
  if (token.corrupt) {
    ctx.lineWidth = 2;
    ctx.strokeStyle = '#7f1d1d';
    ctx.stroke();
  }
  // The label stays inside its token, so two labels never meet; whole pixels keep the cache small.
  const label = token.corrupt ? `✕ ${token.preview}` : token.preview;
  const text = w >= LABEL_MIN_W ? fitText(ctx, label, Math.floor(w - 6), TOKEN_FONT) : '';
  if (text) {
    ctx.fillStyle = '#fff';
    ctx.font = TOKEN_FONT;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, x, y + 0.5);
  }
  ctx.globalAlpha = 1;
}

function clipToTube(ctx, geom) {
  ctx.beginPath();
  ctx.rect(0, -geom.width / 2, geom.len, geom.width);
  ctx.clip();
}

function toWorld(geom, x, y) {
  const c = Math.cos(geom.angle);
  const s = Math.sin(geom.angle);
  return { x: geom.p0.x + c * x - s * y, y: geom.p0.y + s * x + c * y };
}

// Per live view (its `anim`): the width each message was last drawn at (seq → w), where each
// leaving message is (leaver → {d, w, shown}), and the leavers drawLane moved for drawLeavers.
// A message first seen leaving is drawn only if its lane was empty (it went through between two
// frames): it cannot pass the messages queued there.
const memos = new WeakMap();
function memoOf(anim) {
  let memo = memos.get(anim);
  if (!memo) {
    memo = { widths: new Map(), leaving: new WeakMap(), lanes: new Map(), seen: 0 };
    memos.set(anim, memo);
  }
  if (anim.seen < memo.seen) memo.widths.clear(); // a new run: its seqs start over
  memo.seen = anim.seen;
  return memo;
}

// Move the lane's leaving messages on, each behind the one that left before it; returns them.
function moveLeavers(memo, lane, pipe, dir, { anim, nowMs, dt }, room, pad) {
  const out = [];
  let back = -Infinity;
  for (const l of anim.leavers) {
    if (l.token.pipe !== pipe.id || l.token.dir !== dir) continue;
    let m = memo.leaving.get(l);
    if (!m) {
      const w = memo.widths.get(l.token.seq);
      const shown = w !== undefined || !lane.tokens.length;
      m = { d: l.d0, w: w ?? Math.min(room, tokenWidth(l.token.nbytes)), shown };
      memo.leaving.set(l, m);
    }
    if (!m.shown) continue;
    const end = -m.w / 2 - 2 * pad; // out of the tube, under the reading end
    m.d = Math.max(end + (m.d - end) * Math.exp((-4 * dt) / l.dur), back + QUEUE_GAP + m.w / 2);
    back = m.d + m.w / 2;
    out.push({ l, m, alpha: 1 - Math.min(1, (nowMs - l.start) / l.dur) ** 3 });
  }
  return out;
}

/**
 * Draw lane `dir` of `pipe` (tube frame already applied): the queue as layoutQueue lays it out,
 * the oldest at the reading end, behind the messages leaving it; then a "+k more" chip for
 * those that do not fit. Positions and widths ease toward their slots; `anim.pos` keeps each
 * message's distance from the reading end between frames. Drawn messages never overlap.
 */
export function drawLane(ctx, geom, pipe, dir, info) {
  const { state, anim, dt, colourOf, hits, t } = info;
  const lane = pipe.lanes[dir];
  const y = geom.laneY[dir];
  const room = laneRoom(geom);
  const k = Math.exp(-dt / EASE_MS);
  const memo = memoOf(anim);
  const leaving = moveLeavers(memo, lane, pipe, dir, info, room, (geom.len - room) / 2);
  memo.lanes.set(`${pipe.id}/${dir}`, leaving);
  const chipText = (n) => (room > 200 ? `+${n} ${t('more')}` : `+${n}`);
  ctx.font = CHIP_FONT;
  const chipWidth = (n) => ctx.measureText(chipText(n)).width + 10;
  const most = Math.floor(room / (MIN_TOKEN_W + QUEUE_GAP)) + 1;
  const widths = lane.tokens.slice(0, most).map((seq) => tokenWidth(state.tokens[seq]?.nbytes));
  const plan = layoutQueue(widths, room, chipWidth, lane.tokens.length);
  const limit = plan.chip ? room - plan.chip.w - QUEUE_GAP : room;
  let back = leaving.length ? leaving.at(-1).m.d + leaving.at(-1).m.w / 2 : -Infinity;
  ctx.save();
  clipToTube(ctx, geom); // one still entering is cut at the tube's writing end
  for (const [i, slot] of plan.slots.entries()) {
    const seq = lane.tokens[i];
    const token = state.tokens[seq];
    if (!token) continue;
    const was = memo.widths.get(seq);
    const w = was === undefined ? slot.w : slot.w + (was - slot.w) * k;
    const prev = anim.pos.get(seq);
    const eased = prev === undefined ? limit - w / 2 : slot.d + (prev - slot.d) * k;
    const d = Math.max(Math.min(eased, limit - w / 2), back + QUEUE_GAP + w / 2);
    // No room yet behind those leaving: it waits outside the tube, or behind the chip.
    if (plan.chip ? d + w / 2 > limit + 0.5 : d - w / 2 >= room + (geom.len - room) / 2) break;
    anim.pos.set(seq, d);
    memo.widths.set(seq, w);
    back = d + w / 2;
    const x = laneX(geom, dir, d);
    drawToken(ctx, token, x, y, w, colourOf(token.fromPid), 1);
    const c = toWorld(geom, x, y);
    hits.push({ x: c.x, y: c.y, angle: geom.angle, hw: w / 2, hh: (LANE_W - 6) / 2, token });
  }
  ctx.restore();
  if (memo.widths.size > 4000) {
    for (const seq of memo.widths.keys()) {
      if (state.tokens[seq]?.status !== 'queued') memo.widths.delete(seq);
    }
  }
  if (plan.chip) {
    const x = laneX(geom, dir, plan.chip.d);
    roundRect(ctx, x - plan.chip.w / 2, y - 8, plan.chip.w, 16, 8);
    ctx.fillStyle = COLOURS.ink;
    ctx.fill();
    ctx.fillStyle = '#fff';
    ctx.font = CHIP_FONT;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(chipText(plan.more), x, y + 0.5);
  }
}

/** Messages delivered recently slide out of the reading end (under it, clipped) and fade. */
export function drawLeavers(ctx, geom, pipe, dir, { anim, colourOf }) {
  const lanes = memoOf(anim).lanes;
  const leaving = lanes.get(`${pipe.id}/${dir}`);
  lanes.delete(`${pipe.id}/${dir}`);
  if (!leaving?.length) return;
  ctx.save();
  clipToTube(ctx, geom);
  for (const { l, m, alpha } of leaving) {
    const x = laneX(geom, dir, m.d);
    drawToken(ctx, l.token, x, geom.laneY[dir], m.w, colourOf(l.token.fromPid), alpha);
  }
  ctx.restore();
}

/** Point (x, y) in view pixels -> the token drawn there, or null. */
export function hitToken(hits, x, y) {
  for (let i = hits.length - 1; i >= 0; i -= 1) {
    const h = hits[i];
    const c = Math.cos(-h.angle);
    const s = Math.sin(-h.angle);
    const dx = c * (x - h.x) - s * (y - h.y);
    const dy = s * (x - h.x) + c * (y - h.y);
    if (Math.abs(dx) <= h.hw && Math.abs(dy) <= h.hh) return h.token;
  }
  return null;
}
