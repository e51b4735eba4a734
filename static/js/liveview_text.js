// The live view's texts: English defaults (used when the page's lookup does not know a key) and 中文.

export const LIVEVIEW_TEXT = {
  blocked_recv: 'waiting in recv',
  blocked_send: 'waiting in send',
  blocked_poll: 'waiting in poll',
  closed: 'closed',
  queued: 'queued',
  kernel_counts: 'the kernel counts',
  full_send_waits: 'full: send waits',
  deadlock: 'Deadlock',
  duplex: 'duplex',
  one_way: 'one-way',
  corrupt: 'corrupt',
  more: 'more',
  shares_end: 'also holds end',
  running: 'running',
  exited: 'exited',
  killed: 'killed',
  ended_by_run: 'ended with the run',
  signal: 'signal',
  no_processes: 'No run yet: pick a scenario and press Run.',
  no_processes_yet: 'No process has started yet.',
  legend: 'message: width ∝ log(bytes), colour = sender · click one for its bytes',
  liveview_label: 'Live view of the pipes',
  seq_title: 'Sequence chart',
  seq_empty: 'No messages yet.',
  seq_queued: 'queued, not received yet',
  seq_clock: 'stamped before the row above by its own process\'s clock: rows follow cause, a send above its receive',
  sent: 'sent',
  received: 'received',
  'gauge.partial': '{capacity} full of the frame being sent',
  'gauge.partial.queued': '{capacity} full: {queued} queued + the frame being sent',
  'gauge.full.short': '{capacity} full: send waits',
};

// The same keys in 中文 (i18n.js adds them to the page's labels).
export const LIVEVIEW_TEXT_ZH = {
  blocked_recv: '等待 recv', blocked_send: '等待 send', blocked_poll: '等待 poll', closed: '已关闭',
  queued: '排队', kernel_counts: '内核计入', full_send_waits: '已满：send 等待', deadlock: '死锁',
  duplex: '双工', one_way: '单向', corrupt: '损坏', more: '更多',
  running: '运行中', exited: '已退出', killed: '被终止', ended_by_run: '随运行结束', signal: '信号', shares_end: '也持有端',
  no_processes: '尚未运行：选择一个场景并点击“运行”。', no_processes_yet: '还没有进程启动。',
  legend: '消息：宽度 ∝ log(字节数)，颜色 = 发送者 · 点击查看其字节',
  liveview_label: '管道实时视图', seq_title: '时序图', seq_empty: '尚无消息。',
  seq_queued: '已排队，尚未接收', sent: '已发送', received: '已接收',
  seq_clock: '按其进程自己的时钟，早于上一行：各行按因果排列，发送在接收之上',
  'gauge.partial': '{capacity} 已满：正在发送的帧',
  'gauge.partial.queued': '{capacity} 已满：{queued} 排队 + 正在发送的帧',
  'gauge.full.short': '{capacity} 已满：send 等待',
};

/** `text` with each {name} that `vars` has replaced by its value. */
export function fill(text, vars) {
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** Wrap a lookup `t(key, vars)` (which returns the key when unknown) with the English
 *  defaults, filled with `vars` as the lookup fills its own. */
export function withDefaults(t) {
  const lookup = typeof t === 'function' ? t : (k) => k;
  return (key, vars = {}) => {
    const v = lookup(key, vars);
    return v === key || v == null ? fill(LIVEVIEW_TEXT[key] ?? key, vars) : v;
  };
}
