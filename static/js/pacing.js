// When the page takes more events from the socket: not while it is short of time.

const ACK_BELOW = 1000; // events waiting in the page under which the socket may send more
// A frame this late after the one before means the page is short of time: it takes no new
// events then (the socket's worker thins what waits, and the page says how many it skipped),
// but still some at least every ACK_EVERY_MS, so the view never stands still.
const LATE_MS = 25;
const ACK_EVERY_MS = 100;

/**
 * Create the pacer: due(nowMs, backlog, always) says, once per animation frame, whether the
 * page takes more events now (`backlog`: events waiting in the page; `always`: a replay,
 * which takes whatever comes).
 */
export function createAckPacer() {
  let lastFrame = -Infinity;
  let lastAck = -Infinity;
  return {
    due(now, backlog, always = false) {
      const onTime = now - lastFrame <= LATE_MS || now - lastAck >= ACK_EVERY_MS;
      lastFrame = now;
      if (!always && (backlog > ACK_BELOW || !onTime)) return false;
      lastAck = now;
      return true;
    },
  };
}
