// Websocket client for /ws: JSON frames, automatic reconnect with back-off, resubscribe.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 8000;

/** The websocket URL for a path on this page's host, with ?token= when configured. */
export function socketUrl(location, path = '/ws', token = '') {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  return `${scheme}//${location.host}${path}${query}`;
}

/**
 * A WebSocket whose connection lives in a worker (socket_worker.js): the same interface, but
 * a large frame reaches `onmessage` as several smaller ones, and only as fast as ack() says
 * the page took the last ones. When the worker thinned a run's waiting events, or the server
 * left events out of a thinned batch, a page-side frame `{type: 'skipped', run, skipped, by}`
 * says how many calls and output lines went (`by`: 'page' or 'server').
 */
export class WorkerSocket {
  constructor(url) {
    this.readyState = 0;
    this.unacked = 0;
    this.worker = new Worker(new URL('./socket_worker.js', import.meta.url), { type: 'module' });
    this.worker.onmessage = ({ data }) => {
      if (data.event === 'message') {
        if (!data.free) this.unacked += 1;
        this.onmessage?.({ data: data.text });
      } else if (data.event === 'skipped') {
        const { run, skipped, by = 'page' } = data;
        this.onmessage?.({ data: JSON.stringify({ type: 'skipped', run, skipped, by }) });
      } else if (data.event === 'open') {
        this.readyState = 1;
        this.onopen?.();
      } else if (data.event === 'error') {
        this.onerror?.();
      } else if (data.event === 'close') {
        this.readyState = 3;
        this.worker.terminate();
        this.onclose?.();
      }
    };
    this.worker.onerror = () => {
      WorkerSocket.failed = true; // the worker could not load: reconnect without one
      this.close();
    };
    this.worker.postMessage({ open: new URL(url, location.href).href });
  }

  send(text) { this.worker.postMessage({ send: text }); }

  /** The page took every message so far: the worker may send the next ones. */
  ack() {
    if (!this.unacked) return;
    this.worker.postMessage({ ack: this.unacked });
    this.unacked = 0;
  }

  close() {
    if (this.readyState === 3) return;
    this.worker.postMessage({ close: true });
    if (this.readyState === 0) {
      this.readyState = 3;
      this.worker.terminate();
      this.onclose?.();
    }
  }
}

/**
 * Frames on to `deliver`, but the slices of a snapshot the worker cut up (socket_worker.js
 * `slices`) as one snapshot, once its last slice is in: a run is never shown part of the way
 * through the snapshot that brings it (a finished run would read "running" meanwhile).
 */
export function gatherSnapshots(deliver) {
  let held = null; // { run, frame } while a sliced snapshot's rest is still coming
  return (frame) => {
    if (held && frame.type === 'events' && frame.run === held.run) {
      held.frame.events.push(...frame.events);
      if (!frame.snapshotEnd) return;
      [frame, held] = [held.frame, null];
    } else if (frame.type === 'snapshot' && frame.sliced) {
      held = { run: frame.run?.id, frame: { ...frame, events: [...frame.events], sliced: false } };
      return;
    } else if (held && frame.type === 'snapshot' && frame.run?.id === held.run) {
      held = null; // a newer snapshot of the run replaces the one being gathered
    }
    deliver(frame);
  };
}

/**
 * Connect and stay connected.
 * onFrame(frame) gets every parsed server frame; onStatus('connecting'|'open'|'closed') every
 * change. The subscribed run is re-subscribed after each reconnect, so the server sends a
 * fresh snapshot and the page resynchronises.
 */
export function createSocket(url, { onFrame, onStatus, WebSocketImpl = WebSocket, timers = globalThis } = {}) {
  let ws = null;
  let status = 'connecting';
  let delay = MIN_DELAY_MS;
  let retry = null;
  let closed = false;
  let subscribed = null;
  const deliver = gatherSnapshots((frame) => onFrame?.(frame));

  const setStatus = (next) => {
    if (next === status) return;
    status = next;
    onStatus?.(status);
  };
  const sendNow = (frame) => {
    if (ws && ws.readyState === 1) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  };

  function connect() {
    retry = null;
    setStatus('connecting');
    ws = new (WebSocketImpl === WorkerSocket && WorkerSocket.failed ? WebSocket : WebSocketImpl)(url);
    ws.onopen = () => {
      delay = MIN_DELAY_MS;
      setStatus('open');
      if (subscribed) sendNow({ type: 'subscribe', run: subscribed });
    };
    ws.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return; // the server only sends JSON; ignore anything else rather than stop
      }
      deliver(frame);
    };
    ws.onclose = () => {
      ws = null;
      if (closed) return;
      setStatus('closed');
      retry = timers.setTimeout(connect, delay);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    };
    ws.onerror = () => ws?.close();
  }

  connect();
  return {
    get status() { return status; },
    send: sendNow,
    /** The page took what it was given (see WorkerSocket; nothing to do for a plain WebSocket). */
    ack: () => ws?.ack?.(),
    subscribe(runId) {
      if (subscribed && subscribed !== runId) sendNow({ type: 'unsubscribe', run: subscribed });
      subscribed = runId;
      sendNow({ type: 'subscribe', run: runId });
    },
    close() {
      closed = true;
      if (retry) timers.clearTimeout(retry);
      ws?.close();
    },
  };
}
