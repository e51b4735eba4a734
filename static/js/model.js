// Pure run model: protocol events (docs/protocol.md) folded into the state the views draw.

import { endStateOf, ensurePipe, ensureProcess, holdEnd, onCall, push } from './model_calls.js';

const MAX_LINES = 1000; // per process: output beyond this scrolls away

function emptyState() {
  return {
    run: null, status: 'idle', message: '', reason: null, teardownT: null,
    processes: {}, pipes: {}, tokens: {}, delivered: [], verdicts: [], deadlock: null,
    lastCall: null, counts: { events: 0, calls: 0, messages: 0, corrupt: 0 },
    t0: null, tNow: null, lastSeq: null,
    // Set when seqs are missing (a snapshot that holds only the run's latest calls):
    // {from: seq where the unbroken stretch begins, skipped: how many events were not seen}.
    window: null,
    // Additions beyond the page contract: history for the sequence chart.
    spans: [], // {pid, op, pipe, end, since, until} blocked intervals that ended
    marks: [], // {seq, t, pid, pipe, end, kind: 'close'|'error'|'eof', text}
    pendingRecv: {}, // send seq -> receive event that arrived before its send
    recent: [], // the latest deliveries in the order they were applied (for animation)
  };
}

function onProcess(state, ev) {
  const proc = ensureProcess(state, ev.pid, ev.process);
  if (ev.op === 'start') {
    proc.parent = ev.parent ?? null;
    proc.started = ev.t;
    return;
  }
  if (ev.op !== 'exit') return;
  proc.exited = true;
  proc.exitT = ev.t;
  proc.exitcode = ev.exitcode ?? null;
  proc.killed = Boolean(ev.killed) || (proc.exitcode != null && proc.exitcode < 0);
  proc.blocked = null;
  for (const pipe of Object.values(state.pipes)) {
    for (const end of Object.values(pipe.ends)) {
      // The kernel closes an end when the last process holding it is gone.
      delete end.waiting[ev.pid];
      end.open = end.open.filter((pid) => pid !== ev.pid);
      end.state = endStateOf(end);
    }
  }
}

// The calls that began before a snapshot's window are missing: the deadlock's cycle says
// who waits where, so the processes in it are shown blocked all the same.
function waitsFromCycle(state, verdict) {
  for (const w of verdict.cycle ?? []) {
    const proc = ensureProcess(state, w.pid, w.process);
    const end = state.pipes[w.pipe]?.ends[w.end];
    if (proc.blocked || !end || proc.exited) continue;
    proc.blocked = { op: w.op, pipe: w.pipe, end: w.end, since: verdict.t };
    end.waiting[w.pid] = { op: w.op, since: verdict.t };
    end.state = endStateOf(end);
  }
}

function applyOne(state, ev) {
  // A batch seen twice (a snapshot overlapping live frames) must not send its messages twice.
  if (typeof ev.seq === 'number') {
    if (state.lastSeq != null && ev.seq <= state.lastSeq) return;
    const expected = (state.lastSeq ?? 0) + 1;
    if (ev.seq > expected) {
      state.window = { from: ev.seq, skipped: (state.window?.skipped ?? 0) + ev.seq - expected };
    }
    state.lastSeq = ev.seq;
  }
  state.counts.events += 1;
  if (typeof ev.t === 'number') {
    if (state.t0 == null) state.t0 = ev.t;
    if (state.tNow == null || ev.t > state.tNow) state.tNow = ev.t;
  }
  switch (ev.kind) {
    case 'call': onCall(state, ev); break;
    case 'pipe': ensurePipe(state, ev); break;
    case 'attach': holdEnd(ensurePipe(state, ev).ends[ev.end], ev.pid);
      ensureProcess(state, ev.pid, ev.process); break;
    case 'output':
      push(ensureProcess(state, ev.pid, ev.process).lines,
        { stream: ev.stream, text: ev.text, seq: ev.seq }, MAX_LINES);
      break;
    case 'process': onProcess(state, ev); break;
    case 'verdict':
      state.verdicts.push(ev);
      if (ev.verdict === 'deadlock') {
        state.deadlock = ev;
        if (state.window) waitsFromCycle(state, ev);
      }
      break;
    case 'run':
      state.status = ev.state;
      state.message = ev.message ?? '';
      state.reason = ev.reason ?? null;
      state.teardownT = ev.teardown_t ?? null; // exits after it: the run's end ended them
      if (state.run) {
        state.run = { ...state.run, state: ev.state, message: state.message, reason: state.reason };
      }
      break;
    default: break; // unknown kinds come from newer servers: ignore, never fail
  }
}

/**
 * Create the run model.
 * apply(events) folds a batch (in seq order) into `state`; reset() starts over;
 * setRun(summary) records the run summary a snapshot or the run list delivered.
 */
export function createRunModel() {
  const model = {
    state: emptyState(),
    apply(events) {
      for (const ev of events || []) applyOne(model.state, ev);
      return model.state;
    },
    reset(summary = null) {
      Object.assign(model.state, emptyState()); // in place: views may hold the object
      if (summary) model.setRun(summary);
      return model.state;
    },
    setRun(summary) {
      model.state.run = summary;
      if (summary && summary.state) model.state.status = summary.state;
      if (summary && summary.message) model.state.message = summary.message;
      if (summary && summary.reason) model.state.reason = summary.reason;
    },
  };
  return model;
}
