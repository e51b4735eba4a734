// What the analysis concluded (verdict events), told in English and 中文 from each verdict's
// `reason` (docs/protocol.md); a verdict without one keeps the server's English `message`.

export const VERDICT_MESSAGES = {
  en: {
    'verdict.killed': '{process} (pid {pid}) was killed',
    'verdict.killed.signum': '{process} (pid {pid}) was killed by signal {signum}',
    'verdict.killed.signal': '{process} (pid {pid}) was killed by signal {signum} ({signal})',
    'verdict.eof': '{process} got {error} in {op} on pipe {pipe} end {end}: {meaning}',
    'verdict.meaning.EOFError': 'nothing more can arrive, every copy of the other end was closed',
    'verdict.meaning.BrokenPipeError': 'nobody can receive, every copy of the other end was closed',
    'verdict.meaning.ConnectionResetError': 'the other end was closed with data left unread',
    'verdict.meaning.ConnectionAbortedError': 'the other end aborted the connection',
    'verdict.corrupt': 'corrupt frame on pipe {pipe} {dir}: expected {sent}, got {got}',
    'verdict.corrupt.unsent': 'corrupt frame on pipe {pipe} {dir}: got {got}, but no frame was sent towards end {end}',
    'verdict.raced': '; processes used one end at the same time, so their frames interleaved',
    'verdict.frame': '{process} seq {seq} (hash {hash}, {nbytes} bytes)',
    'verdict.frame.error': '{process} seq {seq} ({error})',
    'verdict.kind.corrupt': 'corrupt',
    'verdict.kind.eof': 'eof',
    'verdict.kind.killed': 'killed',
    'verdict.kind.deadlock': 'deadlock',
    'verdict.deadlock.bar': 'Deadlock: {waits}',
    'verdict.deadlock.join': '; ',
  },
  zh: {
    'verdict.killed': '{process}（pid {pid}）被终止',
    'verdict.killed.signum': '{process}（pid {pid}）被信号 {signum} 终止',
    'verdict.killed.signal': '{process}（pid {pid}）被信号 {signum}（{signal}）终止',
    'verdict.eof': '{process} 在管道 {pipe} 的 {end} 端调用 {op} 时得到 {error}：{meaning}',
    'verdict.meaning.EOFError': '不会再有数据到达，另一端的所有副本都已关闭',
    'verdict.meaning.BrokenPipeError': '没有人能再接收，另一端的所有副本都已关闭',
    'verdict.meaning.ConnectionResetError': '另一端关闭时还有未读的数据',
    'verdict.meaning.ConnectionAbortedError': '另一端中止了连接',
    'verdict.corrupt': '管道 {pipe} {dir} 上的损坏帧：应为 {sent}，收到 {got}',
    'verdict.corrupt.unsent': '管道 {pipe} {dir} 上的损坏帧：收到 {got}，但没有帧发往 {end} 端',
    'verdict.raced': '；多个进程同时使用同一端，它们的帧交错在了一起',
    'verdict.frame': '{process} seq {seq}（哈希 {hash}，{nbytes} 字节）',
    'verdict.frame.error': '{process} seq {seq}（{error}）',
    'verdict.kind.corrupt': '损坏',
    'verdict.kind.eof': '文件结束',
    'verdict.kind.killed': '被终止',
    'verdict.kind.deadlock': '死锁',
    'verdict.deadlock.bar': '死锁：{waits}',
    'verdict.deadlock.join': '；',
  },
};

// One frame of a corrupt verdict: whose, and what it carried (an error, or hash and size).
function frameText(args, side, t) {
  const error = args[`${side}_error`];
  const vars = { process: args[`${side}_process`], seq: args[`${side}_seq`], error,
    hash: args[`${side}_hash`], nbytes: args[`${side}_nbytes`] };
  return t(error != null ? 'verdict.frame.error' : 'verdict.frame', vars);
}

/** A verdict in the page's language through `t`, or its English `message` when it has no
 *  reason, its key is unknown or an argument the text needs is missing. */
export function verdictText(verdict, t) {
  const { key, args = {} } = verdict.reason ?? {};
  let text;
  if (key === 'killed') {
    const how = args.signal ? '.signal' : args.signum != null ? '.signum' : '';
    text = t(`verdict.killed${how}`, args);
  } else if (key === 'eof') {
    text = t('verdict.eof', { ...args, meaning: t(`verdict.meaning.${args.error}`) });
  } else if (key === 'corrupt' || key === 'corrupt.unsent') {
    const sent = key === 'corrupt' ? frameText(args, 'sent', t) : '';
    const end = String(args.dir ?? '').slice(-1);
    text = t(`verdict.${key}`, { ...args, end, sent, got: frameText(args, 'got', t) });
    if (args.raced) text += t('verdict.raced');
  } else {
    return verdict.message ?? '';
  }
  return /\{\w+\}|verdict\.|undefined/.test(text) ? verdict.message ?? '' : text;
}

/** "corrupt ×2 · eof": verdicts counted by kind, each kind in the page's language. */
export function verdictCounts(verdicts, t) {
  const counts = new Map();
  for (const v of verdicts ?? []) counts.set(v.verdict, (counts.get(v.verdict) ?? 0) + 1);
  const name = (kind) => {
    const said = t(`verdict.kind.${kind}`);
    return said.startsWith('verdict.') ? kind : said;
  };
  return [...counts].map(([kind, n]) => (n > 1 ? `${name(kind)} ×${n}` : name(kind))).join(' · ');
}

/** Who waits where in a deadlock verdict: a line for each call of its cycle, in the page's
 *  language ('banner.waits'); `pipeName(id)` names a pipe its `pipe_name` does not (records
 *  made before 2026-11-27). */
export function deadlockWaits(verdict, t, pipeName = (id) => id) {
  return (verdict?.cycle ?? []).map((w) => t('banner.waits', {
    process: w.process, pid: w.pid, op: w.op, pipe: w.pipe_name ?? pipeName(w.pipe), end: w.end }));
}

/** The live view's deadlock bar: who waits where, as the banner says it, in the page's
 *  language; the server's English `message` when `t` knows no text for it. */
export function deadlockText(verdict, t) {
  const waits = deadlockWaits(verdict, t);
  const bar = t('verdict.deadlock.bar', { waits: waits.join(t('verdict.deadlock.join')) });
  if (!waits.length || bar === 'verdict.deadlock.bar' || waits[0] === 'banner.waits') {
    // Records made before 2026-11-27 begin their message with the word itself.
    return `${t('deadlock')}: ${(verdict.message || '').replace(/^deadlock: /, '')}`;
  }
  return bar;
}
