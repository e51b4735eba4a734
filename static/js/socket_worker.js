// The websocket read off the page's thread. A flood's multi-megabyte frames are parsed here and
// handed to the page in slices, each a task of its own, no faster than the page takes them (it
// acknowledges what it has applied). A page that falls behind asks the server for thinned
// batches (a `thin` frame: only the latest calls and output lines of each batch, and a count of
// the rest), so neither the server, this parse nor the page pays for events it would not draw;
// once the thinned batches leave nothing out for a while, it asks for every event again. What
// still waits beyond maxWaiting is thinned here, so the page never reads events it would drop.

import { orderSnapshot, skippable } from './feed.js';
import { canInflate, compressedUrl, createFrameReader } from './socket_decode.js';

const SLICE = 500; // events per message to the page
// Messages the page has not acknowledged yet: one, so a page that acknowledges once a frame
// takes at most one slice a frame and what it cannot take is thinned here, not parsed there.
const IN_FLIGHT = 1;
// Events waiting here beyond which the page is behind: it asks for batches of THIN_KEEP calls
// and output lines each, and for every event again once they left none out for CALM_MS.
export const THIN_AT = 3 * SLICE;
export const THIN_KEEP = 100;
export const CALM_MS = 500;

/**
 * When to ask the server for thinned batches of a run and when for every event again:
 * take(frame, waiting, now) returns the `thin` frame to send, or null. A snapshot starts its
 * run over (a new subscription is sent whole): forget(run) then.
 */
export function createThinning({ at = THIN_AT, keep = THIN_KEEP, calmMs = CALM_MS } = {}) {
  const runs = new Map(); // run -> time of the last thinned frame that left events out
  return {
    take(frame, waiting, now) {
      const run = frame.run;
      if (frame.type !== 'events' || typeof run !== 'string') return null;
      if (!runs.has(run)) {
        // Thinned still (a resynchronising snapshot keeps what the page asked for): say when
        // calm, as for a run this page asked to thin.
        if (frame.skipped > 0) runs.set(run, now);
        if (frame.skipped > 0 || waiting <= at) return null;
        runs.set(run, now);
        return { type: 'thin', run, keep };
      }
      if (frame.skipped > 0) runs.set(run, now);
      else if (now - runs.get(run) >= calmMs && waiting <= at) {
        runs.delete(run);
        return { type: 'thin', run, keep: null };
      }
      return null;
    },
    forget: (run) => runs.delete(run),
  };
}

/** A server frame as the messages the page gets: long event lists cut into `events` frames. */
export function slices(frame, size = SLICE) {
  if (frame?.type === 'snapshot' && Array.isArray(frame.events)) {
    const { events, missing } = orderSnapshot(frame.events);
    const rest = [];
    for (let at = size; at < events.length; at += size) {
      rest.push({ type: 'events', run: frame.run?.id, events: events.slice(at, at + size) });
    }
    // The page takes the slices of a snapshot together (socket.js gatherSnapshots).
    if (rest.length) rest[rest.length - 1].snapshotEnd = true;
    return [{ ...frame, events: events.slice(0, size), missing, sliced: rest.length > 0 }, ...rest];
  }
  if (frame?.type === 'events' && Array.isArray(frame.events) && frame.events.length > size) {
    const out = [];
    for (let at = 0; at < frame.events.length; at += size) {
      out.push({ type: 'events', run: frame.run, events: frame.events.slice(at, at + size) });
    }
    return out;
  }
  return [frame];
}

/**
 * Thin the waiting `events` frames of each run to every event but what it may skip (calls
 * and output lines, feed.js `skippable`), and of those the latest `keep`; returns [[run, how many went], ...] and the frames left.
 */
export function thin(frames, keep) {
  const optional = new Map(); // run -> how many of its waiting events it may go without
  for (const f of frames) {
    if (f.type !== 'events') continue;
    let n = optional.get(f.run) ?? 0;
    for (const ev of f.events) if (skippable(ev)) n += 1;
    optional.set(f.run, n);
  }
  const left = new Map([...optional].map(([run, n]) => [run, Math.max(0, n - keep)]));
  const out = [];
  for (const f of frames) {
    let drop = f.type === 'events' ? left.get(f.run) : 0;
    if (!drop) {
      out.push(f);
      continue;
    }
    const events = [];
    for (const ev of f.events) {
      if (drop > 0 && skippable(ev)) drop -= 1;
      else events.push(ev);
    }
    left.set(f.run, drop);
    if (events.length || f.snapshotEnd) out.push({ ...f, events });
  }
  const gone = [...optional].map(([run, n]) => [run, Math.max(0, n - keep)]).filter(([, n]) => n);
  return { frames: out, gone };
}

function runWorker({ maxWaiting = 20000, keep = 2000 } = {}) {
  const thinning = createThinning();
  let ws = null;
  let queue = []; // parsed frames not posted yet, in order
  let waiting = 0; // events in queue
  let inFlight = 0;

  const count = (f) => (f.type === 'events' ? f.events.length : 0);
  function flush() {
    // A count of skipped events goes in its place in the queue, not ahead of it: the page
    // starts its counts over at a snapshot, and must not do so after counting what follows.
    while (queue.length && (inFlight < IN_FLIGHT || queue[0].type === 'skipped')) {
      const part = queue.shift();
      if (part.type === 'skipped') {
        postMessage({ event: 'skipped', run: part.run, skipped: part.skipped, by: part.by });
        continue;
      }
      waiting -= count(part);
      inFlight += 1;
      // As JSON text: the page parses it faster than it would copy the objects.
      postMessage({ event: 'message', text: JSON.stringify(part) });
    }
  }
  function take(frame) {
    if (frame?.type !== 'events' && frame?.type !== 'snapshot') {
      // hello, runs, error: small, and the runs list must not wait behind a flood's events
      postMessage({ event: 'message', text: JSON.stringify(frame), free: true });
      return;
    }
    if (frame.type === 'snapshot') {
      // A snapshot replaces what the run sent before it: what of that still waits can go.
      queue = queue.filter((f) => f.type !== 'events' || f.run !== frame.run?.id);
      thinning.forget(frame.run?.id);
      waiting = queue.reduce((n, f) => n + count(f), 0);
    }
    for (const part of slices(frame)) {
      queue.push(part);
      waiting += count(part);
    }
    // Left out by the server for this page: counted as the page's own skips are.
    if (frame.type === 'events' && frame.skipped > 0) {
      queue.push({ type: 'skipped', run: frame.run, skipped: frame.skipped, by: 'server' });
    }
    const ask = thinning.take(frame, waiting, performance.now());
    if (ask && ws?.readyState === 1) ws.send(JSON.stringify(ask));
    if (waiting > maxWaiting) {
      const { frames, gone } = thin(queue, keep);
      queue = frames;
      waiting = queue.reduce((n, f) => n + count(f), 0);
      for (const [run, skipped] of gone) queue.push({ type: 'skipped', run, skipped, by: 'page' });
    }
    flush();
  }

  globalThis.onmessage = ({ data }) => {
    if (data.open) {
      const compressed = canInflate();
      const reader = createFrameReader(take, { compressed });
      ws = new WebSocket(compressed ? compressedUrl(data.open) : data.open);
      // `events` frames come as binary messages (raw DEFLATE when compressed); the rest as
      // text. Each goes through the reader, so all are taken in the order they arrived.
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => postMessage({ event: 'open' });
      ws.onclose = () => reader.after(() => postMessage({ event: 'close' }));
      ws.onerror = () => reader.after(() => postMessage({ event: 'error' }));
      ws.onmessage = (message) => reader.read(message.data);
    } else if (data.ack) {
      inFlight = Math.max(0, inFlight - data.ack);
      flush();
    } else if (data.send != null && ws?.readyState === 1) {
      ws.send(data.send);
    } else if (data.close) {
      ws?.close();
    }
  };
}

if (typeof WorkerGlobalScope !== 'undefined' && globalThis instanceof WorkerGlobalScope) runWorker();
