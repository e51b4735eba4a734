// The sequence chart's rows (pure): which messages and marks it shows, and the y of a time.

import { endPid } from './layout.js';

export const MAX_MESSAGES = 150; // the chart shows the latest messages; older ones scroll away
export const ROW_H = 24;

/** The pid a message went (or goes) to: its receiver, else the end's holder. */
export function receiverOf(state, token) {
  if (token.toPid != null) return token.toPid;
  const pipe = state.pipes[token.pipe];
  return pipe ? endPid(pipe.ends[token.dir[2]]) : null;
}

// Rows are the calls worth a line, in stream order; the y of a time between rows is
// interpolated so waits line up with the calls around them.
export function buildRows(state) {
  const queued = [];
  for (const pipe of Object.values(state.pipes)) {
    for (const lane of Object.values(pipe.lanes)) {
      queued.push(...lane.tokens.slice(0, MAX_MESSAGES));
    }
  }
  const seqs = state.delivered.slice(-MAX_MESSAGES).concat(queued.sort((a, b) => a - b))
    .slice(-MAX_MESSAGES);
  const tokens = seqs.map((s) => state.tokens[s]).filter(Boolean);
  const from = tokens.length ? Math.min(...tokens.map((tk) => tk.seq)) : 0;
  const rows = [];
  for (const tk of tokens) {
    if (tk.tSend != null) rows.push({ seq: tk.seq, t: tk.tSend });
    if (tk.recvSeq != null) rows.push({ seq: tk.recvSeq, t: tk.tRecv });
  }
  const marks = state.marks.filter((m) => m.seq >= from);
  for (const m of marks) rows.push({ seq: m.seq, t: m.t });
  rows.sort((a, b) => a.seq - b.seq);
  for (let i = rows.length - 1; i > 0; i -= 1) {
    if (rows[i].seq === rows[i - 1].seq) rows.splice(i, 1); // a recv that also failed
  }
  const index = new Map(rows.map((r, i) => [r.seq, i]));
  return { tokens, marks, rows, index };
}

/**
 * The time column's labels (ms since t0). Rows follow cause (a send above its receive), and
 * each process stamps by its own clock: a receive can be stamped a little before its send
 * returned. Such a row shows a dot, its time only in `title`, so the column never runs back.
 */
export function timeLabels(rows, t0) {
  let last = -Infinity;
  return rows.map((r) => {
    const ms = t0 == null ? 0 : Math.round((r.t - t0) / 1e5) / 10;
    const text = `${ms.toFixed(1)} ms`;
    if (ms < last) return { text: '·', title: text, back: true };
    last = ms;
    return { text, title: null, back: false };
  });
}

/** The y of recorded time `t` among the rows (between two rows when between their times). */
export function yOfTime(rows, t) {
  if (!rows.length) return 0;
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (rows[mid].t < t) lo = mid + 1;
    else hi = mid;
  }
  return 12 + Math.max(0, lo - 0.5) * ROW_H;
}
