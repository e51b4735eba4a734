// Labels about a run as a whole, in English and 中文: how it ended, and how much of it the page holds.

export const RUN_MESSAGES = {
  en: {
    'outcome.completed': 'the scenario ran to completion',
    'outcome.worker_killed': '{process} (pid {pid}) was killed; the main process exited with {code}',
    'outcome.worker_killed.signal': '{process} (pid {pid}) was killed by {signal}; the main process exited with {code}',
    'outcome.main_killed': 'the main process was killed by {signal}',
    'outcome.timeout': 'the run exceeded its time limit of {limit} s',
    'outcome.stopped': 'stopped on request',
    'outcome.exit_code': 'the main process exited with code {code}',
    'outcome.exit_code.stderr': 'the main process exited with code {code}: {stderr}',
    'outcome.collector_failed': 'the collector failed: {error}',
    'outcome.deadlock': 'deadlock: every live end is blocked, each waiting for another',
    'outcome.program_exit': '{program} exited with code {code}',
    'outcome.disconnected': 'disconnected: the tracer left before the program ended',
    'outcome.refused': 'the tracer’s stream was refused: {error}',
    'window.banner': 'Showing the latest events only',
    'window.stats': 'The page holds the events from #{from} on: {skipped} older calls and output lines were skipped, so the figures below (but the events) count only those it holds.',
    'window.events': '{shown} of {total} events held · {skipped} calls and output lines skipped',
    'window.sendUnseen': 'sent before the events the page holds',
    'window.behind': 'Events came faster than this page could draw them, so it showed only a sample of the latest and left out {count} calls and output lines. Nothing is lost: the run\'s record keeps every event (Export). Once the page catches up, it shows every event again.',
    'window.behind.ended': 'Events came faster than this page could draw them, so it showed only a sample of the latest and left out {count} calls and output lines. The run has ended, so the page will not add them. Nothing is lost: the run\'s record keeps every event (Export).',
  },
  zh: {
    'outcome.completed': '场景已运行完毕',
    'outcome.worker_killed': '{process}（pid {pid}）被终止；主进程以退出码 {code} 退出',
    'outcome.worker_killed.signal': '{process}（pid {pid}）被 {signal} 终止；主进程以退出码 {code} 退出',
    'outcome.main_killed': '主进程被 {signal} 终止',
    'outcome.timeout': '运行超过了 {limit} 秒的时间限制',
    'outcome.stopped': '已按请求停止',
    'outcome.exit_code': '主进程以退出码 {code} 退出',
    'outcome.exit_code.stderr': '主进程以退出码 {code} 退出：{stderr}',
    'outcome.collector_failed': '采集器出错：{error}',
    'outcome.deadlock': '死锁：所有存活的端都被阻塞，彼此等待',
    'outcome.program_exit': '{program} 以退出码 {code} 退出',
    'outcome.disconnected': '连接已断开：追踪器在程序结束前离开',
    'outcome.refused': '追踪器的数据流被拒绝：{error}',
    'window.banner': '仅显示最近的事件',
    'window.stats': '页面保留了从第 {from} 个事件起的事件：跳过了 {skipped} 个较早的调用和输出行，因此下面的数字（事件数除外）只统计保留的部分。',
    'window.events': '保留 {total} 个事件中的 {shown} 个 · 跳过了 {skipped} 个调用和输出行',
    'window.sendUnseen': '在页面保留的事件之前发送',
    'window.behind': '事件来得比本页面绘制得快，所以页面只显示了最新事件中的一部分，略去了 {count} 个调用和输出行。没有丢失：运行记录保留了每个事件（导出）。页面跟上之后，会重新显示每个事件。',
    'window.behind.ended': '事件来得比本页面绘制得快，所以页面只显示了最新事件中的一部分，略去了 {count} 个调用和输出行。运行已结束，页面不会再补上它们。没有丢失：运行记录保留了每个事件（导出）。',
  },
};

/**
 * The count in a line made from 'window.behind' in any language, or null for any other
 * line: the banner redraws such a line in the page's language, and once the run has ended
 * as 'window.behind.ended' (the page will not catch up any more).
 */
export function behindCount(line) {
  for (const texts of Object.values(RUN_MESSAGES)) {
    const [before, after] = texts['window.behind'].split('{count}');
    const fits = line.length > before.length + after.length;
    if (fits && line.startsWith(before) && line.endsWith(after)) {
      return line.slice(before.length, line.length - after.length);
    }
  }
  return null;
}

// Outcomes whose text changes when an argument is empty: key -> that argument.
const OPTIONAL = { exit_code: 'stderr', worker_killed: 'signal' };

/**
 * The run's outcome in the page's language: `reason` ({key, args}) through `t`, or the
 * server's English `message` when there is no reason, its key is unknown or an argument
 * the text needs is missing.
 */
export function outcomeText(reason, message, t) {
  const key = reason?.key;
  if (typeof key !== 'string' || !(`outcome.${key}` in RUN_MESSAGES.en)) return message ?? '';
  const args = reason.args ?? {};
  const optional = OPTIONAL[key];
  const full = optional && args[optional] != null && args[optional] !== '' ? `outcome.${key}.${optional}` : `outcome.${key}`;
  const text = t(full, args);
  return /\{\w+\}/.test(text) ? message ?? '' : text;
}
