// Canvas drawing of process boxes, the deadlock bar and the shared palette.

import { deadlockText } from './i18n_verdicts.js';

const PALETTE = ['#2563eb', '#d97706', '#059669', '#7c3aed', '#db2777', '#0891b2', '#65a30d',
  '#9333ea', '#ea580c', '#0d9488', '#4f46e5', '#ca8a04', '#be185d', '#15803d', '#0369a1',
  '#a16207'];

export const COLOURS = {
  ink: '#1f2937', muted: '#6b7280', line: '#cbd5e1', tube: '#f1f5f9', tubeEdge: '#94a3b8',
  blocked: '#f59e0b', corrupt: '#dc2626', deadlock: '#b91c1c', closed: '#334155', paper: '#ffffff',
};

export function processColour(proc) {
  return proc ? PALETTE[proc.order % PALETTE.length] : COLOURS.muted;
}

export function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}

// Measuring text is the costliest part of a frame under a flood: the same labels come back
// every frame, so their fitted form is kept (per font and width) until the cache fills.
const fitted = new Map();
const MAX_FITTED = 4000;

/** `text` cut with an ellipsis to fit maxWidth; pass the font set on ctx when known (cheaper). */
export function fitText(ctx, text, maxWidth, font = ctx.font) {
  const key = `${font}|${maxWidth}|${text}`;
  let out = fitted.get(key);
  if (out === undefined) {
    if (fitted.size >= MAX_FITTED) fitted.clear();
    out = measureFit(ctx, String(text), maxWidth);
    fitted.set(key, out);
  }
  return out;
}

function measureFit(ctx, s, maxWidth) {
  if (ctx.measureText(s).width <= maxWidth) return s;
  let lo = 0;
  let hi = s.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (ctx.measureText(`${s.slice(0, mid)}…`).width <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return lo > 0 ? `${s.slice(0, lo)}…` : '';
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

export function formatWait(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
}

/** A process box's status line and its colour; `teardownT`: when the run's teardown began. */
export function statusLine(proc, t, waitedMs, teardownT = null) {
  if (proc.exited) {
    const code = proc.exitcode;
    // Ended by the run's own end (a stop, a time-out, a deadlock): no finding.
    if (proc.killed && teardownT != null && proc.exitT >= teardownT) return [t('ended_by_run'), COLOURS.muted];
    if (code != null && code < 0) return [`${t('killed')} (${t('signal')} ${-code})`, COLOURS.corrupt];
    if (proc.killed) return [t('killed'), COLOURS.corrupt];
    return [`${t('exited')} (${code ?? '?'})`, COLOURS.muted];
  }
  if (proc.blocked) {
    const key = ['send', 'send_bytes'].includes(proc.blocked.op) ? 'blocked_send' : 'blocked_recv';
    const label = proc.blocked.op === 'poll' ? t('blocked_poll') : t(key);
    return [`${label} · ${formatWait(waitedMs)}`, '#b45309'];
  }
  return [t('running'), COLOURS.muted];
}

// A blocked box glows. Blurring its shadow anew every frame was a large share of a software
// canvas's frame under a flood (both ends of a flooded pipe are blocked most of the time), so
// each glow (box size, colour, whole-pixel blur) is drawn once and copied afterwards.
const glows = new Map();
const MAX_GLOWS = 128;

function glow(w, h, colour, blur) {
  const key = `${w}|${h}|${colour}|${blur}`;
  let sprite = glows.get(key);
  if (sprite === undefined) {
    if (glows.size >= MAX_GLOWS) glows.clear();
    const pad = 2 * blur + 2;
    const canvas = new OffscreenCanvas(Math.ceil(w + 2 * pad), Math.ceil(h + 2 * pad));
    const g = canvas.getContext('2d');
    g.shadowColor = colour;
    g.shadowBlur = blur;
    roundRect(g, pad, pad, w, h, 8);
    g.fillStyle = COLOURS.paper;
    g.fill();
    // A bitmap, not the canvas: drawing an OffscreenCanvas takes a snapshot of it every time.
    sprite = { image: canvas.transferToImageBitmap(), pad };
    glows.set(key, sprite);
  }
  return sprite;
}

/** Draw one process box centred at box.x, box.y; pulses while the process is blocked. */
export function drawProcess(ctx, proc, box, { t, nowMs, waitedMs, inDeadlock, teardownT }) {
  const x = box.x - box.w / 2;
  const y = box.y - box.h / 2;
  const colour = processColour(proc);
  ctx.save();
  if (proc.blocked && !proc.exited) {
    const pulse = 0.5 + 0.5 * Math.sin(nowMs / 180);
    const shadow = inDeadlock ? COLOURS.deadlock : COLOURS.blocked;
    const blur = Math.round(6 + 10 * pulse);
    if (typeof OffscreenCanvas === 'function') {
      const sprite = glow(box.w, box.h, shadow, blur);
      ctx.drawImage(sprite.image, x - sprite.pad, y - sprite.pad);
    } else {
      ctx.shadowColor = shadow;
      ctx.shadowBlur = blur;
    }
  }
  roundRect(ctx, x, y, box.w, box.h, 8);
  ctx.fillStyle = proc.exited ? '#f3f4f6' : COLOURS.paper;
  ctx.fill();
  ctx.shadowBlur = 0;
  ctx.lineWidth = proc.blocked && !proc.exited ? 2.5 : 1.5;
  ctx.strokeStyle = inDeadlock ? COLOURS.deadlock : proc.blocked ? COLOURS.blocked : colour;
  if (proc.exited) ctx.setLineDash([4, 3]);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = colour;
  roundRect(ctx, x, y, 6, box.h, 3);
  ctx.fill();
  const inner = box.w - 16;
  ctx.textBaseline = 'alphabetic';
  ctx.textAlign = 'left';
  ctx.fillStyle = proc.exited ? COLOURS.muted : COLOURS.ink;
  ctx.font = '600 12.5px system-ui, sans-serif';
  ctx.fillText(fitText(ctx, proc.name, inner), x + 12, y + 16);
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = COLOURS.muted;
  ctx.fillText(`pid ${proc.pid}`, x + 12, y + 30);
  if (box.h >= 46) {
    const [line, c] = statusLine(proc, t, waitedMs, teardownT);
    ctx.fillStyle = c;
    ctx.fillText(fitText(ctx, line, inner), x + 12, y + 44);
  }
  ctx.restore();
}

/** A red frame and a bar saying who waits where (in the page's language), over the whole view. */
export function drawDeadlock(ctx, width, height, verdict, t, nowMs) {
  ctx.save();
  const pulse = 0.6 + 0.4 * Math.sin(nowMs / 300);
  ctx.strokeStyle = `rgba(185, 28, 28, ${pulse})`;
  ctx.lineWidth = 4;
  ctx.strokeRect(2, 2, width - 4, height - 4);
  ctx.font = '600 13px system-ui, sans-serif';
  const text = fitText(ctx, deadlockText(verdict, t), width - 40);
  const w = Math.min(width - 16, ctx.measureText(text).width + 24);
  roundRect(ctx, (width - w) / 2, height - 34, w, 26, 6);
  ctx.fillStyle = COLOURS.deadlock;
  ctx.fill();
  ctx.fillStyle = '#fff';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillText(text, width / 2, height - 21);
  ctx.restore();
}

/** Cycle members of a deadlock verdict as a Set of "pipe/end" and of pids. */
export function deadlockMembers(verdict) {
  const ends = new Set();
  const pids = new Set();
  for (const w of (verdict && verdict.cycle) || []) {
    ends.add(`${w.pipe}/${w.end}`);
    pids.add(w.pid);
  }
  return { ends, pids };
}
