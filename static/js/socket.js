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
    ws = new WebSocketImpl(url);
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
      onFrame?.(frame);
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
