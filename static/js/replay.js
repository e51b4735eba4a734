// Replay of a recorded run: the scrubber's time → the events that happened by then (pure).

/**
 * Index of the first event the view must not show yet at recorded time `tNs`: the first whose
 * `t` is later, as the playback clock releases them. `peaks[i]` is the largest `t` of
 * events[0..i], so it never decreases and a binary search finds that index.
 */
export function countAt(peaks, tNs) {
  let lo = 0;
  let hi = peaks.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (peaks[mid] <= tNs) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function peaksOf(events) {
  const peaks = new Float64Array(events.length);
  let top = -Infinity;
  events.forEach((ev, i) => {
    if (typeof ev.t === 'number' && ev.t > top) top = ev.t;
    peaks[i] = top;
  });
  return peaks;
}

/**
 * Create the replay controller over a playback clock.
 * open(summary, events) starts a replay at the run's first event; seek(tNs) rebuilds the
 * state at that time: restart(summary) makes every view start over, apply(events) folds the
 * events up to tNs at once, and the rest is queued on the playback clock (setLive(false)),
 * so playing on shows exactly what the live run showed. close() ends the replay.
 */
export function createReplay({ playback, restart, apply }) {
  let run = null;
  let events = [];
  let peaks = new Float64Array(0);
  let span = { t0: 0, t1: 0 };
  let seeded = false; // the views hold this replay's events up to the clock
  let rebuilt = 0;

  const api = {
    open(summary, list) {
      run = summary;
      seeded = false;
      events = list ?? [];
      peaks = peaksOf(events);
      let t0 = Infinity;
      for (const ev of events) if (typeof ev.t === 'number' && ev.t < t0) t0 = ev.t;
      span = Number.isFinite(t0) ? { t0, t1: peaks[peaks.length - 1] } : { t0: 0, t1: 0 };
      api.seek(span.t0);
    },
    seek(tNs) {
      if (!run) return;
      const at = Math.max(span.t0, Math.min(span.t1, Number(tNs)));
      const n = countAt(peaks, at);
      const shown = events.length - playback.backlog;
      // Forward only adds the events in between; backward must rebuild from the start.
      const from = seeded && n >= shown ? shown : 0;
      if (from === 0) restart(run);
      playback.clear();
      playback.setLive(false);
      apply(events.slice(from, n));
      playback.push(events.slice(n));
      playback.seek(at);
      seeded = true;
      rebuilt = from === 0 ? rebuilt + 1 : rebuilt;
    },
    /** Seek to a fraction (0..1) of the run's time span. */
    seekFraction(f) {
      api.seek(span.t0 + Math.max(0, Math.min(1, f)) * (span.t1 - span.t0));
    },
    close() {
      run = null;
      seeded = false;
      events = [];
      peaks = new Float64Array(0);
      playback.clear();
      playback.setLive(true);
    },
    get active() { return run != null; },
    get run() { return run; },
    get span() { return { ...span }; },
    get total() { return events.length; },
    /** Recorded time shown now, within the run's span. */
    get position() {
      if (!run) return null;
      const clock = playback.clockNs ?? span.t0;
      return Math.max(span.t0, Math.min(span.t1, clock));
    },
    /** Events shown so far: those applied at the last seek and those the clock released since. */
    get shown() { return run ? events.length - playback.backlog : 0; },
    get ended() { return run != null && playback.backlog === 0; },
    get fraction() {
      const width = span.t1 - span.t0;
      return !run || width <= 0 ? 1 : (api.position - span.t0) / width;
    },
    /** How many seeks rebuilt the state from the start (the others only added events). */
    get rebuilds() { return rebuilt; },
  };
  return api;
}
