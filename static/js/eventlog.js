// The filterable event log: a virtualised list that draws only the rows in view.

export const ROW_HEIGHT = 22;
const OVERSCAN = 8;
const MAX_EVENTS = 100000; // the log keeps the latest events; a flood's oldest scroll away

/** The columns of one event's row, as text. */
export function describeEvent(event, t0) {
  const elapsed = t0 == null ? '' : `${((event.t - t0) / 1e9).toFixed(4)}s`;
  const where = event.pipe ? `${event.pipe_name ?? event.pipe}${event.end ? ` ${event.end}` : ''}` : event.kind;
  let what = event.kind;
  let detail = '';
  if (event.kind === 'call') {
    what = `${event.op} ${event.phase}`;
    const bits = [];
    if (event.nbytes != null) bits.push(`${event.nbytes} B`);
    if (event.preview != null) bits.push(event.preview);
    if (event.op === 'poll' && event.result != null) bits.push(`→ ${event.result}`);
    if (event.error_type) bits.push(`${event.error_type}: ${event.error ?? ''}`);
    detail = bits.join('  ');
  } else if (event.kind === 'output') {
    what = event.stream;
    detail = event.text;
  } else if (event.kind === 'process') {
    what = event.op;
    detail = event.exitcode != null ? `exitcode ${event.exitcode}` : '';
  } else if (event.kind === 'thread') {
    what = `thread ${event.op}`;
    const n = event.helpers ?? 0;
    const feeders = n ? `: ${n} Queue feeder${n > 1 ? 's' : ''}` : '';
    detail = `${event.threads} thread${event.threads === 1 ? '' : 's'}${feeders}`;
  } else if (event.kind === 'verdict') {
    what = event.verdict;
    detail = event.message ?? '';
  } else if (event.kind === 'run') {
    what = event.state;
    detail = event.message ?? '';
  }
  return [String(event.seq), elapsed, event.process ?? '', where, what, detail];
}

/** The value of each filter for an event ('' when the event has none). */
export function filterKeys(event) {
  return { process: event.process ?? '', pipe: event.pipe_name ?? event.pipe ?? '', op: event.op ?? event.kind ?? '' };
}

/**
 * The event log inside root ([data-eventlog-viewport], [data-filter=*], [data-eventlog-count],
 * and [data-eventlog-empty], shown when the filters leave out every event).
 */
export function createEventLog(root, { t }) {
  const viewport = root.querySelector('[data-eventlog-viewport]');
  const spacer = root.querySelector('[data-eventlog-spacer]');
  const count = root.querySelector('[data-eventlog-count]');
  const empty = root.querySelector('[data-eventlog-empty]');
  const selects = Object.fromEntries([...root.querySelectorAll('[data-filter]')].map((s) => [s.dataset.filter, s]));
  const seen = { process: new Set(), pipe: new Set(), op: new Set() };
  let events = [];
  let shown = []; // indexes into events that pass the filters
  let t0 = null;
  let drawn = '';
  let follow = true;
  let dropped = 0; // events the log let go to stay within MAX_EVENTS
  let skipped = 0; // events the page never received (a snapshot of the latest calls only)

  const filters = () => Object.fromEntries(Object.entries(selects).map(([k, s]) => [k, s.value]));
  // f: [key, value] pairs of the filters in use
  const passes = (event, f) => {
    const keys = filterKeys(event);
    return f.every(([k, v]) => keys[k] === v);
  };

  function addOption(key, value) {
    if (!value || seen[key].has(value)) return;
    seen[key].add(value);
    const option = document.createElement('option');
    option.value = value;
    option.textContent = value;
    selects[key]?.append(option);
  }

  function draw(force = false) {
    spacer.style.height = `${shown.length * ROW_HEIGHT}px`;
    // Rows drawn for a longer list may still stretch the scroll area: clamp to this list.
    const maxTop = Math.max(0, shown.length * ROW_HEIGHT - viewport.clientHeight);
    if (follow) viewport.scrollTop = maxTop;
    const top = Math.min(viewport.scrollTop, maxTop);
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(shown.length, Math.ceil((top + viewport.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    const key = `${first}:${last}:${shown.length}`;
    const missing = skipped + dropped;
    // Grouped digits, as the banners and the statistics show their counts.
    const shownText = shown.length.toLocaleString();
    const totalText = events.length.toLocaleString();
    count.textContent = missing
      ? t('window.events', { shown: shownText, total: totalText, skipped: missing.toLocaleString() })
      : t('events.count', { shown: shownText, total: totalText });
    root.dataset.total = String(events.length);
    root.dataset.skipped = String(missing);
    root.dataset.shown = String(shown.length);
    const noMatch = shown.length === 0 && events.length > 0; // without filters, every event shows
    if (empty && empty.hidden === noMatch) empty.hidden = !noMatch;
    if (key === drawn && !force) return;
    drawn = key;
    const rows = [];
    for (let i = first; i < last; i += 1) {
      const event = events[shown[i]];
      const row = document.createElement('div');
      row.className = `ev ev-${event.kind}${event.phase ? ` ev-${event.phase}` : ''}`;
      if (event.corrupt) {
        row.classList.add('ev-corrupt');
        row.title = event.corrupt;
      }
      row.style.top = `${i * ROW_HEIGHT}px`;
      row.dataset.seq = String(event.seq);
      const cells = describeEvent(event, t0);
      row.title ||= cells.join('  ');
      for (const text of cells) {
        const cell = document.createElement('span');
        cell.textContent = text;
        row.append(cell);
      }
      rows.push(row);
    }
    spacer.replaceChildren(...rows);
  }

  function trim() {
    const cut = events.length - MAX_EVENTS;
    events = events.slice(cut);
    dropped += cut;
    let keep = 0;
    while (keep < shown.length && shown[keep] < cut) keep += 1;
    shown = shown.slice(keep).map((i) => i - cut);
    drawn = '';
  }

  function refilter() {
    const f = Object.entries(filters()).filter(([, v]) => v);
    shown = [];
    events.forEach((event, i) => { if (passes(event, f)) shown.push(i); });
    draw(true);
  }

  // Count what the model's window `held` left out, and redraw (every row when `force`).
  function show(held, force) {
    skipped = held?.skipped ?? 0;
    draw(force);
  }

  for (const select of Object.values(selects)) select.addEventListener('change', refilter);
  viewport.addEventListener('scroll', () => {
    // Scrolled to the end: keep following new rows; scrolled up: stay put.
    follow = viewport.scrollTop + viewport.clientHeight >= viewport.scrollHeight - ROW_HEIGHT * 2;
    draw();
  });

  return {
    element: root,
    reset() {
      events = [];
      shown = [];
      t0 = null;
      dropped = 0;
      skipped = 0;
      for (const [key, set] of Object.entries(seen)) {
        set.clear();
        selects[key].length = 1; // keep "All"
        selects[key].value = '';
      }
      viewport.scrollTop = 0;
      follow = true;
      draw(true);
    },
    /** Append events (in seq order); a log scrolled to its end keeps following new rows. */
    push(batch) {
      if (!batch.length) return;
      const f = Object.entries(filters()).filter(([, v]) => v); // only the filters in use
      // Runs for every event of a flood: no object per event, only the three keys.
      for (const event of batch) {
        if (t0 == null && event.t != null) t0 = event.t;
        addOption('process', event.process ?? '');
        addOption('pipe', event.pipe_name ?? event.pipe ?? '');
        addOption('op', event.op ?? event.kind ?? '');
        if (!f.length || passes(event, f)) shown.push(events.length);
        events.push(event);
      }
      if (events.length > MAX_EVENTS + (MAX_EVENTS >> 2)) trim();
    },
    /** Redraw the rows in view (call at most a few times a second); `held` is the model's window. */
    update(held = null) { show(held, false); },
    /** Redraw every row in view (after a change of language), with the model's window `held`. */
    refresh(held = null) { show(held, true); },
    get size() { return events.length; },
    destroy() { spacer.replaceChildren(); },
  };
}
