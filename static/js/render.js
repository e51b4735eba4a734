// Live view: a canvas of process boxes joined by pipe tubes with messages flowing FIFO.

import { endPid, layoutRun } from './layout.js';
import { withDefaults } from './liveview_text.js';
import { COLOURS, deadlockMembers, drawDeadlock, drawProcess,
  processColour } from './render_process.js';
import { drawFocus, drawHolder, trackDeliveries } from './render_anim.js';
import { drawLane, drawLeavers, hitToken } from './render_tokens.js';
import { drawTubeBody, drawTubeLabels, tubeGeometry } from './render_tube.js';
const LIVE = new Set(['starting', 'running']);

function layoutKey(state, w, h) {
  const parts = [w, h, Object.keys(state.processes).join(',')];
  for (const p of Object.values(state.pipes)) {
    parts.push(`${p.id}:${endPid(p.ends.a)}:${endPid(p.ends.b)}:${p.ends.a.open}:${p.ends.b.open}`);
  }
  return parts.join('|');
}

// The recorded time (ns) shown: the playback clock (it stands still while the view is paused
// or a replay is), or the last event's time once the run has ended or without a clock.
function shownTime(state, clockNs) {
  if (clockNs == null || state.tNow == null) return state.tNow ?? 0;
  return LIVE.has(state.status) ? Math.max(clockNs, state.tNow) : Math.min(clockNs, state.tNow);
}

/**
 * Create the live view inside `container`. update(state, nowMs, clockNs) draws the run model's
 * state at recorded time clockNs (waits are counted to it); nowMs drives every animation, so a
 * test can step it frame by frame. onTokenClick(token) fires for a click (or Enter) on a message.
 */
export function createLiveView(container, { t, onTokenClick } = {}) {
  const tt = withDefaults(t);
  const element = document.createElement('div');
  element.className = 'liveview';
  const canvas = document.createElement('canvas');
  canvas.className = 'liveview-canvas';
  canvas.tabIndex = 0;
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', tt('liveview_label'));
  element.append(canvas);
  container.append(element);
  // Opaque: the compositor need not blend the view, redrawn every frame, over what lies beneath.
  const ctx = canvas.getContext('2d', { alpha: false });
  let size = { w: 0, h: 0, dpr: 1 };
  let layout = null;
  let key = '';
  let hits = [];
  let focus = -1;
  let last = null; // [state, nowMs, clockNs] for redraws on resize
  let waits = {}; // pid → ms blocked, as drawn in the last frame
  const anim = { pos: new Map(), leavers: [], seen: 0, lastNow: null, tNow: null, tNowWall: 0,
    corrupt: -1, corruptByPipe: new Map() };
  let box = null; // the element's size, from the ResizeObserver: reading it every frame forced a layout
  function measure() {
    box ??= { w: element.clientWidth || container.clientWidth, h: element.clientHeight || container.clientHeight };
    const w = Math.max(200, Math.round(box.w || 640));
    const h = Math.max(240, Math.round(box.h || 420));
    const dpr = window.devicePixelRatio || 1;
    if (w !== size.w || h !== size.h || dpr !== size.dpr) {
      size = { w, h, dpr };
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
      canvas.style.width = `${w}px`;
      canvas.style.height = `${h}px`;
    }
  }

  function draw(state, nowMs, clockNs) {
    measure();
    const k = layoutKey(state, size.w, size.h);
    if (k !== key || !layout) {
      key = k;
      layout = layoutRun(state, size.w, size.h - 40);
      layout.geoms = {};
      for (const pipe of Object.values(state.pipes)) {
        const g = layout.pipes[pipe.id] && tubeGeometry(layout.pipes[pipe.id], layout.boxes, pipe);
        if (g) layout.geoms[pipe.id] = g;
      }
    }
    trackDeliveries(anim, state, nowMs, layout.geoms);
    const dt = anim.lastNow == null ? 1000 : Math.max(0, nowMs - anim.lastNow);
    anim.lastNow = nowMs;
    const shownNs = shownTime(state, clockNs);
    const waitMs = (since) => (shownNs - since) / 1e6;
    const dl = deadlockMembers(state.deadlock);
    const colourOf = (pid) => processColour(state.processes[pid]);
    const info = { t: tt, nowMs, waitMs, deadlockEnds: dl.ends, corruptByPipe: anim.corruptByPipe };
    ctx.setTransform(size.dpr, 0, 0, size.dpr, 0, 0);
    ctx.fillStyle = COLOURS.paper;
    ctx.fillRect(0, 0, size.w, size.h);
    hits = [];
    const procs = Object.values(state.processes);
    if (!procs.length) {
      ctx.fillStyle = COLOURS.muted;
      ctx.font = '14px system-ui, sans-serif';
      ctx.textAlign = 'center';
      const waiting = state.status === 'idle' ? 'no_processes' : 'no_processes_yet'; // a run is starting
      ctx.fillText(tt(waiting), size.w / 2, size.h / 2);
      return;
    }
    const laneInfo = { state, anim, nowMs, dt, colourOf, hits, t: tt };
    // Three passes, so a tube never hides another pipe's messages or labels.
    for (const pass of ['body', 'lanes', 'labels']) {
      for (const pipe of Object.values(state.pipes)) {
        const g = layout.geoms[pipe.id];
        if (!g) continue;
        if (pass === 'body') {
          const lp = layout.pipes[pipe.id];
          for (const end of ['a', 'b']) {
            for (const pid of lp.extra[end]) {
              drawHolder(ctx, layout.boxes[pid], g, end, colourOf(pid), tt);
            }
          }
        }
        ctx.save();
        ctx.translate(g.p0.x, g.p0.y);
        ctx.rotate(g.angle);
        if (pass === 'body') drawTubeBody(ctx, g, pipe, info);
        else if (pass === 'labels') drawTubeLabels(ctx, g, pipe, info);
        else {
          for (const dir of Object.keys(pipe.lanes)) {
            drawLane(ctx, g, pipe, dir, laneInfo);
            drawLeavers(ctx, g, pipe, dir, laneInfo);
          }
        }
        ctx.restore();
      }
    }
    waits = {};
    for (const proc of procs) {
      const box = layout.boxes[proc.pid];
      if (!box) continue;
      const waitedMs = proc.blocked ? waitMs(proc.blocked.since) : 0;
      if (proc.blocked) waits[proc.pid] = waitedMs;
      drawProcess(ctx, proc, box, { t: tt, nowMs, waitedMs, inDeadlock: dl.pids.has(proc.pid), teardownT: state.teardownT });
    }
    if (focus >= 0 && hits[focus]) drawFocus(ctx, hits[focus]);
    ctx.fillStyle = COLOURS.muted;
    ctx.font = '11px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.textBaseline = 'bottom';
    if (!state.deadlock) ctx.fillText(tt('legend'), 10, size.h - 8);
    if (state.deadlock) drawDeadlock(ctx, size.w, size.h, state.deadlock, tt, nowMs);
  }

  const point = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  };
  const onClick = (ev) => {
    const token = hitToken(hits, ...point(ev));
    if (token && onTokenClick) onTokenClick(token);
  };
  const onMove = (ev) => { canvas.style.cursor = hitToken(hits, ...point(ev)) ? 'pointer' : ''; };
  const onKey = (ev) => {
    if (!hits.length) return;
    if (ev.key === 'ArrowRight' || ev.key === 'ArrowLeft') {
      focus = (focus + (ev.key === 'ArrowRight' ? 1 : hits.length - 1)) % hits.length;
      ev.preventDefault();
    } else if ((ev.key === 'Enter' || ev.key === ' ') && hits[focus] && onTokenClick) {
      onTokenClick(hits[focus].token);
      ev.preventDefault();
    }
  };
  const listeners = [['click', onClick], ['mousemove', onMove], ['keydown', onKey]];
  for (const [type, fn] of listeners) canvas.addEventListener(type, fn);
  const marks = {};
  function mark(name, value) {
    if (marks[name] !== value) element.dataset[name] = marks[name] = value;
  }
  const observer = new ResizeObserver(([entry]) => {
    box = { w: entry.contentRect.width, h: entry.contentRect.height };
    if (last) draw(...last);
  });
  observer.observe(element);

  return {
    element,
    update(state, nowMs, clockNs = null) {
      last = [state, nowMs, clockNs];
      draw(state, nowMs, clockNs);
      // Written only when they change: an attribute set every frame invalidates style every frame.
      mark('processes', String(Object.keys(state.processes).length));
      mark('pipes', String(Object.keys(state.pipes).length));
      mark('tokensShown', String(hits.length));
      mark('deadlock', state.deadlock ? 'true' : 'false');
      mark('layout', layout?.kind ?? '');
    },
    /** The message drawn at (x, y) in the view's CSS pixels, or null. */
    tokenAt: (x, y) => hitToken(hits, x, y),
    /** Centres of the messages drawn in the last frame (for tests and keyboard focus). */
    hits: () => hits.map((h) => ({ x: h.x, y: h.y, seq: h.token.seq })),
    /** How long each blocked process had waited at the time shown in the last frame (ms, by pid). */
    waits: () => ({ ...waits }),
    destroy() {
      observer.disconnect();
      for (const [type, fn] of listeners) canvas.removeEventListener(type, fn);
      element.remove();
    },
  };
}
