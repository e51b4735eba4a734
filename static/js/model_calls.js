// Pipes, ends, lanes and tokens: how `call` events move frames through a pipe (pure).

const SEND_OPS = new Set(['send', 'send_bytes']);
const RECV_OPS = new Set(['recv', 'recv_bytes', 'recv_bytes_into']);
const MAX_DELIVERED = 20000; // delivered tokens kept for the detail view and the chart
const MAX_SPANS = 2000; // blocked intervals kept for the sequence chart
const MAX_MARKS = 2000;

const peerOf = (end) => (end === 'a' ? 'b' : 'a');

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
    waiting: {}, error: null };
}

function newLane(capacity) {
  return { tokens: [], queued: 0, capacity: capacity ?? null, sent: 0, received: 0,
    kernelQueued: null };
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
  const waits = Object.values(end.waiting);
  if (waits.some((w) => SEND_OPS.has(w.op))) return 'blocked_send';
  if (waits.length) return 'blocked_recv';
  return end.error ? 'errored' : 'idle';
}

function laneFor(pipe, dir) {
  if (!pipe.lanes[dir]) pipe.lanes[dir] = newLane(pipe.capacity); // a call the pipe type forbids
  return pipe.lanes[dir];
}

function onSend(state, pipe, ev) {
  const dir = `${ev.end}>${peerOf(ev.end)}`;
  const lane = laneFor(pipe, dir);
  const token = { seq: ev.seq, pipe: pipe.id, dir, op: ev.op, fromPid: ev.pid, toPid: null,
    nbytes: ev.nbytes ?? 0, preview: ev.preview ?? '', type: ev.type ?? '', hash: ev.hash ?? '',
    head: ev.head ?? '', site: ev.site ?? null, tSend: ev.t, tRecv: null, status: 'queued',
    corrupt: null, recvSeq: null, latencyNs: null };
  state.tokens[ev.seq] = token;
  lane.tokens.push(ev.seq);
  lane.queued += token.nbytes;
  lane.sent += 1;
  const early = state.pendingRecv[ev.seq];
  if (early) {
    delete state.pendingRecv[ev.seq];
    onReceive(state, pipe, early);
  }
}

function onReceive(state, pipe, ev) {
  const lane = laneFor(pipe, `${peerOf(ev.end)}>${ev.end}`);
  let idx = ev.match != null ? lane.tokens.indexOf(ev.match) : -1;
  if (idx < 0 && ev.match > ev.seq) {
    // The receiver's record can precede the send's (a send's `end` is written after the
    // kernel took the frame): deliver it when that send arrives.
    state.pendingRecv[ev.match] = ev;
    return;
  }
  if (idx < 0 && ev.match == null && lane.tokens.length) idx = 0;
  let token;
  if (idx >= 0) {
    token = state.tokens[lane.tokens[idx]];
    lane.tokens.splice(idx, 1);
    lane.queued = Math.max(0, lane.queued - token.nbytes);
  } else {
    // A frame from an untraced sender, or a send we never saw: keep it visible anyway.
    token = { seq: ev.seq, pipe: pipe.id, dir: `${peerOf(ev.end)}>${ev.end}`, op: null,
      fromPid: null, nbytes: ev.nbytes ?? 0, preview: ev.preview ?? '', type: ev.type ?? '',
      hash: ev.hash ?? '', head: ev.head ?? '', site: null, tSend: null };
    state.tokens[ev.seq] = token;
  }
  Object.assign(token, { toPid: ev.pid, tRecv: ev.t, status: 'delivered',
    corrupt: ev.corrupt ?? null, recvSeq: ev.seq, latencyNs: ev.latency_ns ?? null,
    recvPreview: ev.preview ?? null, recvHash: ev.hash ?? null });
  lane.received += 1;
  // Delivery order is receive order; a receive held for its late send goes back in place.
  let at = state.delivered.length;
  while (at > 0 && (state.tokens[state.delivered[at - 1]]?.recvSeq ?? 0) > ev.seq) at -= 1;
  state.delivered.splice(at, 0, token.seq);
  push(state.recent, token.seq, 64);
  state.counts.messages += 1;
  if (token.corrupt) state.counts.corrupt += 1;
  if (state.delivered.length > MAX_DELIVERED) {
    for (const seq of state.delivered.splice(0, state.delivered.length - MAX_DELIVERED)) {
      delete state.tokens[seq];
    }
  }
}

export function push(list, item, max) {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
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
    if (RECV_OPS.has(ev.op) && ev.queued != null) {
      laneFor(pipe, `${peerOf(ev.end)}>${ev.end}`).kernelQueued = ev.queued;
    }
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
    end.error = null;
    if (SEND_OPS.has(ev.op)) onSend(state, pipe, ev);
    else if (RECV_OPS.has(ev.op)) onReceive(state, pipe, ev);
  } else if (ev.phase === 'error') {
    if (ev.corrupt && RECV_OPS.has(ev.op)) onReceive(state, pipe, ev);
    end.error = { type: ev.error_type ?? 'Error', message: ev.error ?? '', seq: ev.seq, op: ev.op };
    push(state.marks, { seq: ev.seq, t: ev.t, pid: ev.pid, pipe: pipe.id, end: ev.end,
      kind: ev.error_type === 'EOFError' ? 'eof' : 'error',
      text: `${ev.op}: ${ev.error_type ?? 'Error'}` }, MAX_MARKS);
  }
  end.state = endStateOf(end);
}

