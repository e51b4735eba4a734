// Lanes and tokens: how frames enter a pipe's lane on send and leave it on receive (pure).

const MAX_DELIVERED = 20000; // delivered tokens kept for the detail view and the chart

export const peerOf = (end) => (end === 'a' ? 'b' : 'a');

// Keeps the latest `max` items, give or take a quarter: trimming one item per append would
// move the whole list each time, which made rebuilding a long run's state slow.
export function push(list, item, max) {
  list.push(item);
  if (list.length > max + (max >> 2)) list.splice(0, list.length - max);
}

export function newLane(capacity) {
  // bytes, latencyNs and timed add up every delivery, so statistics never walk the tokens.
  return { tokens: [], queued: 0, capacity: capacity ?? null, sent: 0, received: 0,
    kernelQueued: null, early: [], bytes: 0, latencyNs: 0, timed: 0 };
}

// A socketpair's kernel counts each message's memory against the buffer's capacity, not only
// its payload: at least 768 bytes a message (Linux 6, x86-64), so 278 unread messages of
// 100 bytes fill a 208 KiB buffer and block the writer. A pipe (os.pipe) counts the payload.
export const SOCKET_MESSAGE_MIN = 768;

/** How full the kernel buffer of lane `dir` is: `fill` (0..1) of `capacity`, from `queued`
 *  payload bytes and, for a socketpair, `counted`: at least what its kernel counts for them.
 *  While its sender waits in send the buffer is full (`waits`), whatever the frames already
 *  sent add up to: a send returns once the kernel took its frame (a step-mode hold comes
 *  before a call's `begin`), so one that waits (past pickling its object) has filled the
 *  buffer with the part of its frame that fits. `partial`: the frames sent before do not fill
 *  it (`queued` counts only frames whose send returned), the waiting one's part does. */
export function gaugeOf(pipe, dir) {
  const lane = pipe.lanes[dir];
  const counted = pipe.transport === 'socketpair'
    ? Math.max(lane.queued, lane.tokens.length * SOCKET_MESSAGE_MIN) : lane.queued;
  const waiting = Object.values(pipe.ends[dir[0]]?.waiting ?? {});
  const waits = waiting.some((w) => w.op === 'send' || w.op === 'send_bytes');
  const fill = !lane.capacity ? 0 : waits ? 1 : Math.min(1, counted / lane.capacity);
  const partial = waits && Boolean(lane.capacity) && counted < lane.capacity;
  return { fill, waits, partial, queued: lane.queued, counted, capacity: lane.capacity };
}

/** Lane `dir` of a pipe, or null for the direction a one-way pipe does not have: a call its
 *  type forbids (a recv on the writer, a send on the reader) fails and adds no lane. */
export function laneFor(pipe, dir) {
  if (!pipe.lanes[dir] && pipe.duplex) pipe.lanes[dir] = newLane(pipe.capacity);
  return pipe.lanes[dir] ?? null;
}

// A receive that came before its send, before the analysis could match them, was shown as
// a frame from nowhere: the next send on its lane is that frame (FIFO), so it takes the send's
// seq and details, and no second copy is left queued in the tube.
function adopt(state, lane, ev) {
  while (lane.early.length) {
    const token = state.tokens[lane.early.shift()];
    if (!token) continue; // dropped with the oldest deliveries
    const was = token.seq;
    delete state.tokens[was];
    Object.assign(token, { seq: ev.seq, op: ev.op, fromPid: ev.pid, nbytes: ev.nbytes ?? 0,
      preview: ev.preview ?? '', type: ev.type ?? '', hash: ev.hash ?? '', head: ev.head ?? '',
      site: ev.site ?? null, tSend: ev.t, latencyNs: Math.max(0, token.tRecv - ev.t) });
    state.tokens[ev.seq] = token;
    for (const list of [state.delivered, state.recent]) {
      const at = list.lastIndexOf(was);
      if (at >= 0) list[at] = ev.seq;
    }
    lane.sent += 1;
    lane.latencyNs += token.latencyNs;
    lane.timed += 1;
    return true;
  }
  return false;
}

export function onSend(state, pipe, ev) {
  const dir = `${ev.end}>${peerOf(ev.end)}`;
  const lane = laneFor(pipe, dir);
  if (!lane) return;
  if (!state.pendingRecv[ev.seq] && adopt(state, lane, ev)) return;
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

// The pid holding an end alone, else null (several holders: the sender is unknown).
function soleHolder(pipe, end) {
  const pids = pipe.ends[end]?.pids ?? [];
  return pids.length === 1 ? pids[0] : null;
}

// A snapshot's window can begin after a receive whose send it holds: that frame waits at
// the head of its lane although it was read. A frame never overtakes one of its own
// sender's, so those ahead of the matched one from the same sender were read already.
function dropReadUnseen(state, lane, idx) {
  const pid = state.tokens[lane.tokens[idx]]?.fromPid;
  const kept = [];
  for (const seq of lane.tokens.slice(0, idx)) {
    const token = state.tokens[seq];
    if (!token || token.fromPid !== pid) {
      kept.push(seq);
      continue;
    }
    lane.queued = Math.max(0, lane.queued - token.nbytes);
    lane.received += 1;
    delete state.tokens[seq];
  }
  lane.tokens.splice(0, idx, ...kept);
  return kept.length;
}

// A receive whose send the page never saw (left out to keep up): every frame sent on its lane
// before that send was read before it (FIFO), though the page missed those receives too.
function dropSentBefore(state, lane, match) {
  const kept = [];
  for (const seq of lane.tokens) {
    const token = state.tokens[seq];
    if (!token || seq >= match) {
      kept.push(seq);
      continue;
    }
    lane.queued = Math.max(0, lane.queued - token.nbytes);
    lane.received += 1;
    delete state.tokens[seq];
  }
  if (kept.length === lane.tokens.length) return;
  lane.tokens.length = 0;
  for (const seq of kept) lane.tokens.push(seq);
}

export function onReceive(state, pipe, ev) {
  const lane = laneFor(pipe, `${peerOf(ev.end)}>${ev.end}`);
  if (!lane) return;
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
    if (idx > 0 && state.window) idx = dropReadUnseen(state, lane, idx);
    token = state.tokens[lane.tokens[idx]];
    lane.tokens.splice(idx, 1);
    lane.queued = Math.max(0, lane.queued - token.nbytes);
  } else {
    // A frame from an untraced sender, or a send we never saw: keep it visible anyway.
    // Matched to a send before the snapshot's window: it was sent, the page only missed it.
    const unseen = state.window != null && ev.match != null;
    if (unseen) dropSentBefore(state, lane, ev.match);
    token = { seq: ev.seq, pipe: pipe.id, dir: `${peerOf(ev.end)}>${ev.end}`, op: null,
      fromPid: unseen ? soleHolder(pipe, peerOf(ev.end)) : null, nbytes: ev.nbytes ?? 0,
      preview: ev.preview ?? '', type: ev.type ?? '', hash: ev.hash ?? '', head: ev.head ?? '',
      site: null, tSend: null, sendUnseen: unseen };
    state.tokens[ev.seq] = token;
    if (unseen) lane.sent += 1;
    if (ev.match == null) lane.early.push(ev.seq); // its send may still be on its way
  }
  Object.assign(token, { toPid: ev.pid, tRecv: ev.t, status: 'delivered',
    corrupt: ev.corrupt ?? null, recvSeq: ev.seq, latencyNs: ev.latency_ns ?? null,
    recvPreview: ev.preview ?? null, recvHash: ev.hash ?? null });
  lane.received += 1;
  lane.bytes += token.nbytes;
  // A send's end is stamped after the kernel took the frame, so its receiver may be stamped
  // first: such a latency counts as 0, as the analysis has it.
  if (token.latencyNs == null && token.tSend != null) token.latencyNs = Math.max(0, ev.t - token.tSend);
  if (token.latencyNs != null) {
    lane.latencyNs += token.latencyNs;
    lane.timed += 1;
  }
  // Delivery order is receive order; a receive held for its late send goes back in place.
  let at = state.delivered.length;
  while (at > 0 && (state.tokens[state.delivered[at - 1]]?.recvSeq ?? 0) > ev.seq) at -= 1;
  state.delivered.splice(at, 0, token.seq);
  push(state.recent, token.seq, 64);
  state.counts.messages += 1;
  if (token.corrupt) state.counts.corrupt += 1;
  if (state.delivered.length > MAX_DELIVERED + (MAX_DELIVERED >> 2)) {
    for (const seq of state.delivered.splice(0, state.delivered.length - MAX_DELIVERED)) {
      delete state.tokens[seq];
    }
  }
}

