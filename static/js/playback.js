// Playback clock: releases events at their recorded pace, scaled by speed, catching up when live.

const MIN_SPEED = 0.1;
const MAX_SPEED = 4;

/**
 * Create a playback clock.
 * push(events) queues events (in seq order); advance(nowMs) returns the events due at nowMs.
 * Live mode never lets the view drift: past `maxBacklog` queued events or `maxLagMs` of
 * recorded time behind the newest event, the whole backlog is released at once
 * (`caughtUp` counts those events). Replay mode (`setLive(false)`) always keeps the pace.
 * Gaps longer than `maxGapMs` of recorded time are shortened to that.
 */
export function createPlayback({ live = true, maxBacklog = 300, maxLagMs = 2000,
  maxGapMs = 1500 } = {}) {
  let queue = [];
  let head = 0; // index of the next event in queue: cheaper than shifting a long array
  let clockNs = null; // recorded time the view has reached
  let lastNow = null;
  let newestNs = null;
  let speed = 1;
  let paused = false;
  let caughtUp = 0;
  let releaseAll = false; // the next advance releases every queued event (see releaseAtNextFrame)

  const backlog = () => queue.length - head;

  function take(count) {
    const out = queue.slice(head, head + count);
    head += count;
    if (head > 4096 && head * 2 > queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
    return out;
  }

  function takeAll() {
    const out = take(backlog());
    if (newestNs != null) clockNs = Math.max(clockNs ?? newestNs, newestNs);
    return out;
  }

  const api = {
    push(events) {
      for (const ev of events || []) {
        queue.push(ev);
        if (typeof ev.t === 'number' && (newestNs == null || ev.t > newestNs)) newestNs = ev.t;
      }
    },
    advance(nowMs) {
      const dt = lastNow == null ? 0 : Math.max(0, nowMs - lastNow);
      lastNow = nowMs;
      if (paused) return [];
      if (!backlog()) {
        if (clockNs != null) {
          clockNs += dt * 1e6 * speed;
          // Replaying: the next pushed event must still play at its pace.
          if (!api.live && newestNs != null) clockNs = Math.min(clockNs, newestNs);
        }
        return [];
      }
      const first = queue[head];
      if (clockNs == null) clockNs = first.t ?? 0;
      else clockNs += dt * 1e6 * speed;
      if (releaseAll) {
        releaseAll = false;
        return takeAll();
      }
      if (api.live && (backlog() > maxBacklog || newestNs - clockNs > maxLagMs * 1e6)) {
        caughtUp += backlog();
        return takeAll();
      }
      if (typeof first.t === 'number' && first.t - clockNs > maxGapMs * 1e6) {
        clockNs = first.t - maxGapMs * 1e6; // an idle stretch: do not make the viewer wait it out
      }
      let n = 0;
      while (head + n < queue.length) {
        const t = queue[head + n].t;
        if (typeof t === 'number' && t > clockNs) break;
        n += 1;
      }
      return take(n);
    },
    /** Release the events up to and including the next `call` event, paused or not. */
    stepOne() {
      let n = 0;
      while (head + n < queue.length) {
        n += 1;
        if (queue[head + n - 1].kind === 'call') break;
      }
      const out = take(n);
      const last = out[out.length - 1];
      if (last && typeof last.t === 'number') clockNs = Math.max(clockNs ?? last.t, last.t);
      return out;
    },
    /** Release everything queued (e.g. on resynchronisation). */
    flush: takeAll,
    /** Let the next advance (not paused) release everything queued: a finished run's events. */
    releaseAtNextFrame() { releaseAll = true; },
    clear() {
      queue = [];
      head = 0;
      clockNs = null;
      newestNs = null;
      lastNow = null;
      releaseAll = false;
    },
    setSpeed(x) {
      const v = Number(x);
      if (!Number.isFinite(v) || v <= 0) {
        throw new RangeError(`speed must be a positive number, got ${x}`);
      }
      speed = Math.min(MAX_SPEED, Math.max(MIN_SPEED, v));
    },
    setLive(on) { api.live = Boolean(on); },
    /** Put the clock at recorded time `ns` (a replay's scrubber); what is queued plays from there. */
    seek(ns) {
      clockNs = ns;
      if (newestNs == null || newestNs < ns) newestNs = ns;
      lastNow = null;
    },
    pause() { paused = true; },
    resume() { paused = false; },
    live,
    get paused() { return paused; },
    get speed() { return speed; },
    get backlog() { return backlog(); },
    get caughtUp() { return caughtUp; },
    /** Recorded time the view shows (ns), or null before the first event. */
    get clockNs() { return clockNs; },
    /** How far the view trails the newest event, in ms of recorded time. */
    get delayMs() { return newestNs == null || clockNs == null ? 0 : Math.max(0, (newestNs - clockNs) / 1e6); },
  };
  return api;
}
