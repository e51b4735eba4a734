// Processes, pipes and ends: how `call` events change who holds an end and who waits (pure).

import { laneFor, newLane, onReceive, onSend, peerOf, push } from './model_lanes.js';

export { push };

const SEND_OPS = new Set(['send', 'send_bytes']);
const RECV_OPS = new Set(['recv', 'recv_bytes', 'recv_bytes_into']);
const MAX_SPANS = 2000; // blocked intervals kept for the sequence chart
const MAX_MARKS = 2000;


export function ensureProcess(state, pid, name) {
  let p = state.processes[pid];
  if (!p) {
    p = { pid, name: name || `pid ${pid}`, lines: [], blocked: null, exited: false,
      exitcode: null, parent: null, started: null, order: Object.keys(state.processes).length };
    state.processes[pid] = p;
  } else if (name && p.name.startsWith('pid ')) {
    p.name = name;
  }
  return p;
}

function newEnd(creator) {
  // Until another process attaches it, an end lives in the process that created the pipe.
  return { state: 'idle', pids: [creator], open: [creator], provisional: true,
    waiting: {}, error: null, used: {} };
}

export function ensurePipe(state, ev) {
  let pipe = state.pipes[ev.pipe];
  if (!pipe) {
    const duplex = ev.kind === 'pipe' ? ev.duplex !== false : true;
    const creator = ev.kind === 'pipe' ? ev.pid : Number(String(ev.pipe).split('.')[0]) || ev.pid;
    // One-way: `a` reads and `b` writes, so the only lane runs b>a.
    const lanes = duplex ? { 'a>b': newLane(ev.capacity), 'b>a': newLane(ev.capacity) }
      : { 'b>a': newLane(ev.capacity) };
    pipe = { id: ev.pipe, name: ev.pipe_name || ev.pipe, duplex,
      transport: ev.transport || null, capacity: ev.capacity ?? null, creator,
      site: ev.site || null, ends: { a: newEnd(creator), b: newEnd(creator) }, lanes,
      order: Object.keys(state.pipes).length };
    state.pipes[ev.pipe] = pipe;
    ensureProcess(state, creator, creator === ev.pid ? ev.process : null);
  } else if (ev.kind === 'pipe') {
    Object.assign(pipe, { name: ev.pipe_name || pipe.name, transport: ev.transport || null,
      capacity: ev.capacity ?? pipe.capacity, site: ev.site || pipe.site });
  }
  return pipe;
}

export function holdEnd(end, pid) {
  if (end.provisional && end.pids[0] !== pid) {
    end.pids = [pid];
    end.provisional = false;
  } else if (!end.pids.includes(pid)) {
    end.pids.push(pid);
  }
  if (!end.open.includes(pid)) end.open.push(pid);
  if (end.state === 'closed') end.state = 'idle';
}

export function endStateOf(end) {
  if (end.open.length === 0) return 'closed';
  let waits = false; // no Object.values here: this runs for every call of a long replay
  for (const pid in end.waiting) {
    if (SEND_OPS.has(end.waiting[pid].op)) return 'blocked_send';
    waits = true;
  }
  if (waits) return 'blocked_recv';
  return end.error ? 'errored' : 'idle';
}

export function onCall(state, ev) {
  const pipe = ensurePipe(state, ev);
  const end = pipe.ends[ev.end];
  const proc = ensureProcess(state, ev.pid, ev.process);
  if (!end) return;
  if (ev.capacity != null) {
    for (const lane of Object.values(pipe.lanes)) lane.capacity = ev.capacity;
  }
  if (ev.site) state.lastCall = { pid: ev.pid, site: ev.site, seq: ev.seq };
  if (ev.phase === 'begin') {
    if (ev.op !== 'close') holdEnd(end, ev.pid);
    // FIONREAD at a receive: what the kernel really holds (frame headers included).
    const lane = RECV_OPS.has(ev.op) && ev.queued != null
      ? laneFor(pipe, `${peerOf(ev.end)}>${ev.end}`) : null;
    if (lane) lane.kernelQueued = ev.queued;
    proc.blocked = { op: ev.op, pipe: pipe.id, end: ev.end, since: ev.t };
    end.waiting[ev.pid] = { op: ev.op, since: ev.t };
    end.state = endStateOf(end);
    return;
  }
  state.counts.calls += 1;
  const waited = end.waiting[ev.pid];
  if (waited) {
    push(state.spans, { pid: ev.pid, op: waited.op, pipe: pipe.id, end: ev.end,
      since: waited.since, until: ev.t }, MAX_SPANS);
    delete end.waiting[ev.pid];
  }
  if (proc.blocked && proc.blocked.pipe === pipe.id && proc.blocked.end === ev.end) {
    proc.blocked = null;
  }
  if (ev.op === 'close') {
    end.open = end.open.filter((pid) => pid !== ev.pid);
    push(state.marks, { seq: ev.seq, t: ev.t, pid: ev.pid, pipe: pipe.id, end: ev.end,
      kind: 'close', text: 'close()' }, MAX_MARKS);
  } else if (ev.phase === 'end') {
    holdEnd(end, ev.pid);
    end.used[ev.pid] = (end.used[ev.pid] ?? 0) + 1; // calls that did something on it
    end.error = null;
    if (SEND_OPS.has(ev.op)) onSend(state, pipe, ev);
    else if (RECV_OPS.has(ev.op)) onReceive(state, pipe, ev);
  } else if (ev.phase === 'error') {
    // A frame the analysis matched was read (BufferTooShort, a bad length, a corrupt one).
    if (RECV_OPS.has(ev.op) && (ev.corrupt || ev.match != null)) onReceive(state, pipe, ev);
    end.error = { type: ev.error_type ?? 'Error', message: ev.error ?? '', seq: ev.seq, op: ev.op };
    push(state.marks, { seq: ev.seq, t: ev.t, pid: ev.pid, pipe: pipe.id, end: ev.end,
      kind: ev.error_type === 'EOFError' ? 'eof' : 'error',
      text: `${ev.op}: ${ev.error_type ?? 'Error'}` }, MAX_MARKS);
  }
  end.state = endStateOf(end);
}

