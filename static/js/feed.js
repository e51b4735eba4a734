// The page's one path from events to the model and panels, applied within a budget per frame.

const CHUNK = 256; // events applied between two looks at the clock

/**
 * What a view that fell behind may go without: calls and output lines, but not a call that
 * closed an end or raised (it changes what the page shows of that end for good).
 */
export function skippable(ev) {
  if (ev.kind === 'output') return true;
  return ev.kind === 'call' && ev.op !== 'close' && ev.phase !== 'error';
}

/**
 * A snapshot's events in seq order, and how many seqs are missing before its last event
 * (a snapshot of a long run holds its run, pipe, process, attach and verdict events but
 * only its latest calls and output lines).
 */
export function orderSnapshot(events) {
  let list = events ?? [];
  let sorted = true;
  for (let i = 1; i < list.length && sorted; i += 1) sorted = list[i - 1].seq < list[i].seq;
  if (!sorted) list = [...list].sort((p, q) => p.seq - q.seq);
  const last = list.length ? list[list.length - 1].seq : 0;
  const missing = typeof last === 'number' ? Math.max(0, last - list.length) : 0;
  return { events: list, missing };
}

/**
 * Create the feed. `sinks` take every applied batch (`add(events)`, optional) and start over
 * on `reset()`; the model folds the batch first. pump(nowMs) applies what the playback clock
 * releases, at most about `budgetMs` of work a frame: a large snapshot or a flood's batch is
 * spread over the next frames instead of holding one frame up. When more than `maxWaiting`
 * events wait all the same (a flood faster than the page), the view skips ahead as the server
 * does for a slow viewer: it keeps every event but calls and output lines, and of those only
 * the latest `keep`; onSkip(count) tells how many it let go (the model sees the gap).
 */
export function createFeed({ model, playback, sinks = [], budgetMs = 6, maxWaiting = 20000,
  keep = 2000, onSkip = () => {}, clock = () => performance.now() }) {
  let batches = []; // released by the playback clock, not applied yet
  let at = 0; // how much of batches[0] is applied
  let waiting = 0;

  function next() {
    const batch = batches[0];
    const chunk = at === 0 && batch.length <= CHUNK ? batch : batch.slice(at, at + CHUNK);
    at += chunk.length;
    if (at >= batch.length) {
      batches.shift();
      at = 0;
    }
    waiting -= chunk.length;
    return chunk;
  }

  function skipAhead() {
    let drop = -keep;
    batches.forEach((batch, b) => {
      for (let i = b ? 0 : at; i < batch.length; i += 1) if (skippable(batch[i])) drop += 1;
    });
    if (drop <= 0) return;
    const kept = [];
    let left = drop;
    batches.forEach((batch, b) => {
      for (let i = b ? 0 : at; i < batch.length; i += 1) {
        if (left > 0 && skippable(batch[i])) left -= 1;
        else kept.push(batch[i]);
      }
    });
    batches = [kept];
    at = 0;
    waiting = kept.length;
    onSkip(drop);
  }

  function apply(events) {
    if (!events.length) return;
    model.apply(events);
    for (const sink of sinks) sink.add?.(events);
  }

  return {
    /** Start over (a new run, or a snapshot that replaces everything seen so far). */
    reset(summary = null) {
      model.reset(summary);
      playback.clear();
      batches = [];
      at = 0;
      waiting = 0;
      for (const sink of sinks) sink.reset();
    },
    /** Apply at once, after what waits (a replay's seek and step show their state straight away). */
    apply(events) {
      while (waiting) apply(next());
      apply(events);
    },
    /** Queue events on the playback clock. */
    push: (events) => playback.push(events),
    /** Apply what is due at nowMs within the budget; true when anything changed. */
    pump(nowMs) {
      const due = playback.advance(nowMs);
      if (due.length) {
        batches.push(due);
        waiting += due.length;
        if (waiting > maxWaiting) skipAhead();
      }
      if (!waiting) return false;
      const start = clock();
      do apply(next()); while (waiting && clock() - start < budgetMs);
      return true;
    },
    /** Events received but not shown yet: on the playback clock or waiting for a frame. */
    get backlog() { return playback.backlog + waiting; },
  };
}
