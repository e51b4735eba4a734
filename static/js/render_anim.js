// Live view bookkeeping between frames (deliveries to animate) and small overlays.

import { roundRect } from './render_process.js';
import { CORRUPT_LEAVE_MS, LEAVE_MS, tokenWidth } from './render_tokens.js';
import { laneRoom } from './render_tube.js';

const MAX_LEAVERS = 24; // under a flood only the latest deliveries animate
const MAX_POSITIONS = 2000;

/** Note the messages delivered since the last frame so they can slide out of their lane. */
export function trackDeliveries(anim, state, nowMs, geoms) {
  if (state.counts.messages < anim.seen) {
    anim.pos.clear();
    anim.leavers = [];
    anim.seen = 0;
  }
  const fresh = Math.min(state.counts.messages - anim.seen, MAX_LEAVERS, state.recent.length);
  for (const seq of state.recent.slice(state.recent.length - fresh)) {
    const token = state.tokens[seq];
    if (!token) continue;
    const seen = anim.pos.get(seq);
    const geom = geoms && geoms[token.pipe];
    const d0 = seen ?? (geom ? laneRoom(geom) - tokenWidth(token.nbytes) / 2 : 0);
    anim.pos.delete(seq);
    const dur = token.corrupt ? CORRUPT_LEAVE_MS : seen === undefined ? LEAVE_MS * 2 : LEAVE_MS;
    anim.leavers.push({ token, d0, start: nowMs, dur });
  }
  anim.seen = state.counts.messages;
  if (anim.pos.size > MAX_POSITIONS) {
    // Under a flood most deliveries are not animated: forget where those tokens were drawn.
    for (const seq of anim.pos.keys()) {
      if (state.tokens[seq]?.status !== 'queued') anim.pos.delete(seq);
    }
  }
  anim.leavers = anim.leavers.filter((l) => nowMs - l.start < l.dur).slice(-MAX_LEAVERS);
  if (state.tNow !== anim.tNow) {
    anim.tNow = state.tNow;
    anim.tNowWall = nowMs;
  }
  if (state.counts.corrupt !== anim.corrupt) {
    anim.corrupt = state.counts.corrupt;
    anim.corruptByPipe = new Map();
    for (const seq of state.delivered) {
      const tok = state.tokens[seq];
      if (tok && tok.corrupt) anim.corruptByPipe.set(tok.pipe, (anim.corruptByPipe.get(tok.pipe) || 0) + 1);
    }
  }
}

export function drawHolder(ctx, box, g, end, colour, t) {
  if (!box) return;
  // Another process holding the same end: a dashed lead to where the end meets its tube.
  const x = g.endX[end];
  const p = { x: g.p0.x + Math.cos(g.angle) * x, y: g.p0.y + Math.sin(g.angle) * x };
  ctx.save();
  ctx.setLineDash([6, 4]);
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(box.x, box.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  ctx.font = '600 10.5px system-ui, sans-serif';
  ctx.fillStyle = colour;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'bottom';
  ctx.fillText(`${t('shares_end')} ${end}`, (box.x + p.x) / 2 + 6, (box.y + p.y) / 2 - 4);
  ctx.restore();
}

export function drawFocus(ctx, h) {
  ctx.save();
  ctx.translate(h.x, h.y);
  ctx.rotate(h.angle);
  ctx.strokeStyle = '#111827';
  ctx.lineWidth = 2;
  roundRect(ctx, -h.hw - 3, -h.hh - 3, 2 * h.hw + 6, 2 * h.hh + 6, 6);
  ctx.stroke();
  ctx.restore();
}
