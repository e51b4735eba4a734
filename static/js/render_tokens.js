// Canvas drawing of the messages (tokens) queued in a lane and of those leaving it.

import { COLOURS, fitText, roundRect } from './render_process.js';
import { LANE_W, laneRoom, laneX } from './render_tube.js';

const GAP = 3;
const TOKEN_FONT = '600 10px ui-monospace, monospace';
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
  roundRect(ctx, x - w / 2, y - h / 2, w, h, 5);
  ctx.fillStyle = token.corrupt ? COLOURS.corrupt : colour;
  ctx.fill();
  if (token.corrupt) {
    ctx.lineWidth = 2;
    ctx.strokeStyle = '#7f1d1d';
    ctx.stroke();
  }
  ctx.fillStyle = '#fff';
  ctx.font = TOKEN_FONT;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  const label = token.corrupt ? `✕ ${token.preview}` : token.preview;
  const text = fitText(ctx, label, w - 6, TOKEN_FONT);
  if (text) ctx.fillText(text, x, y + 0.5);
  ctx.globalAlpha = 1;
}

function toWorld(geom, x, y) {
  const c = Math.cos(geom.angle);
  const s = Math.sin(geom.angle);
  return { x: geom.p0.x + c * x - s * y, y: geom.p0.y + s * x + c * y };
}

// Room to keep free for the "+k more" badge: none when every queued token fits.
function fitting(lane, state, room) {
  let used = 0;
  for (const seq of lane.tokens) {
    used += tokenWidth(state.tokens[seq] ? state.tokens[seq].nbytes : 0) + GAP;
    if (used > room) return room > 200 ? 86 : 34;
  }
  return 0;
}

/**
 * Draw lane `dir` of `pipe` (tube frame already applied): at most as many tokens as fit, the
 * oldest at the receiving end, then a "+k more" badge. Positions ease toward their slots;
 * `anim.pos` keeps each token's distance from the receiving end between frames.
 */
export function drawLane(ctx, geom, pipe, dir, { state, anim, nowMs, dt, colourOf, hits, t }) {
  const lane = pipe.lanes[dir];
  const y = geom.laneY[dir];
  const room = laneRoom(geom);
  const k = Math.exp(-dt / EASE_MS);
  let target = 0;
  let shown = 0;
  const limit = room - fitting(lane, state, room);
  for (const seq of lane.tokens) {
    const token = state.tokens[seq];
    if (!token) continue;
    const w = tokenWidth(token.nbytes);
    if (target + w > limit && shown > 0) break;
    const goal = target + w / 2;
    const prev = anim.pos.get(seq);
    const d = prev === undefined ? room - w / 2 : goal + (prev - goal) * k;
    anim.pos.set(seq, d);
    const x = laneX(geom, dir, d);
    drawToken(ctx, token, x, y, w, colourOf(token.fromPid), 1);
    const c = toWorld(geom, x, y);
    hits.push({ x: c.x, y: c.y, angle: geom.angle, hw: w / 2, hh: (LANE_W - 6) / 2, token });
    target += w + GAP;
    shown += 1;
  }
  const more = lane.tokens.length - shown;
  if (more > 0) {
    const text = room > 200 ? `+${more} ${t('more')}` : `+${more}`;
    ctx.font = '600 10px system-ui, sans-serif';
    const w = ctx.measureText(text).width + 10;
    const x = laneX(geom, dir, room - w / 2);
    roundRect(ctx, x - w / 2, y - 8, w, 16, 8);
    ctx.fillStyle = COLOURS.ink;
    ctx.fill();
    ctx.fillStyle = '#fff';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, x, y + 0.5);
  }
}

/** Tokens delivered recently slide out of the receiving end into the receiver and fade. */
export function drawLeavers(ctx, geom, pipe, dir, { anim, nowMs, colourOf }) {
  const y = geom.laneY[dir];
  for (const l of anim.leavers) {
    if (l.token.pipe !== pipe.id || l.token.dir !== dir) continue;
    const p = Math.min(1, (nowMs - l.start) / l.dur);
    const ease = 1 - (1 - p) ** 2;
    const d = l.d0 + (-28 - l.d0) * ease;
    const w = tokenWidth(l.token.nbytes);
    const alpha = 1 - p ** 3;
    drawToken(ctx, l.token, laneX(geom, dir, d), y, w, colourOf(l.token.fromPid), alpha);
  }
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
