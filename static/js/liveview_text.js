// English defaults for the live view's texts, used when the page's lookup does not know a key.

export const LIVEVIEW_TEXT = {
  blocked_recv: 'waiting in recv',
  blocked_send: 'waiting in send',
  blocked_poll: 'waiting in poll',
  closed: 'closed',
  queued: 'queued',
  deadlock: 'Deadlock',
  duplex: 'duplex',
  one_way: 'one-way',
  corrupt: 'corrupt',
  more: 'more',
  shares_end: 'also holds end',
  running: 'running',
  exited: 'exited',
  killed: 'killed',
  signal: 'signal',
  no_processes: 'No run yet: pick a scenario and press Run.',
  no_processes_yet: 'No process has started yet.',
  legend: 'message: width ∝ log(bytes), colour = sender · click one for its bytes',
  liveview_label: 'Live view of the pipes',
  seq_title: 'Sequence chart',
  seq_empty: 'No messages yet.',
  seq_queued: 'queued, not received yet',
  sent: 'sent',
  received: 'received',
};

/** Wrap a lookup `t(key)` (which returns the key when unknown) with the English defaults. */
export function withDefaults(t) {
  const lookup = typeof t === 'function' ? t : (k) => k;
  return (key) => {
    const v = lookup(key);
    return v === key || v == null ? LIVEVIEW_TEXT[key] ?? key : v;
  };
}
