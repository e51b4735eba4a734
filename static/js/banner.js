// Banners above the live view: the run's outcome, deadlock with who waits where, corruption, notices.

import { behindCount, outcomeText } from './i18n_run.js';
import { deadlockWaits, verdictText } from './i18n_verdicts.js';

export const TERMINAL = new Set(['completed', 'failed', 'stopped', 'timeout', 'deadlock', 'killed']);
const MAX_LISTED = 50; // beyond this a banner only counts

/** Plain-data banners for a state: [{kind, tone, title, lines}] (tested without a DOM). */
export function bannersFor(state, t) {
  const out = [];
  const pipeName = (id) => state.pipes?.[id]?.name ?? id;
  if (state.deadlock) {
    const cycle = state.deadlock.cycle ?? [];
    out.push({
      kind: 'deadlock', tone: 'bad', title: t('banner.deadlock'),
      lines: [
        ...deadlockWaits(state.deadlock, t, pipeName),
        // The server's own sentence repeats the cycle; it is the fallback when none is named.
        cycle.length ? '' : state.deadlock.message ?? '',
      ].filter(Boolean),
    });
  }
  const byKind = (kind) => (state.verdicts ?? []).filter((v) => v.verdict === kind);
  const corrupt = byKind('corrupt');
  if (corrupt.length) {
    const lines = corrupt.slice(0, MAX_LISTED).map((v) => verdictText(v, t));
    if (corrupt.length > MAX_LISTED) lines.push(`… (+${corrupt.length - MAX_LISTED})`);
    out.push({ kind: 'corrupt', tone: 'bad', title: `${t('banner.corrupt')} ×${corrupt.length}`, lines });
  }
  // A process the run's teardown ended (a stop, a time-out, a deadlock) is no finding.
  const byTeardown = (v) => state.teardownT != null && v.t >= state.teardownT;
  // A run that ended `killed` for a worker a verdict names says so once: the outcome's sentence
  // (it adds how the main process ended) stands in the verdict's line, with no banner of its own.
  const outcome = killedWorker(state, t);
  let told = false;
  const lineOf = (v) => {
    if (!outcome || v.verdict !== 'killed' || !isAbout(v, outcome.pid)) return verdictText(v, t);
    told = true;
    return outcome.text;
  };
  for (const kind of ['killed', 'eof']) {
    const found = byKind(kind).filter((v) => kind !== 'killed' || !byTeardown(v));
    if (found.length) {
      const title = `${t(`banner.${kind}`)}${found.length > 1 ? ` ×${found.length}` : ''}`;
      out.push({ kind, tone: 'warn', title, lines: found.map(lineOf) });
    }
  }
  const ok = state.status === 'completed';
  // A clean completion gets its banner; after a verdict the status chip says it.
  if (TERMINAL.has(state.status) && state.status !== 'deadlock' && !(ok && out.length) && !told) {
    out.push({
      kind: `status-${state.status}`, tone: ok ? 'good' : 'warn',
      title: ok ? t('banner.completed') : t(`status.${state.status}`),
      lines: ok ? [] : [outcomeText(state.reason, state.message, t)].filter(Boolean),
    });
  }
  return out;
}

// The worker whose kill ended the run, and the outcome's sentence saying so; null otherwise.
function killedWorker(state, t) {
  const pid = state.reason?.args?.pid;
  if (state.status !== 'killed' || state.reason?.key !== 'worker_killed' || pid == null) return null;
  const text = outcomeText(state.reason, state.message, t);
  return text ? { pid, text } : null;
}

// Whether a killed verdict is about process `pid` (a verdict without a reason names it in words).
const isAbout = (v, pid) => (v.reason?.args?.pid ?? null) === pid
  || (v.reason == null && (v.message ?? '').includes(`(pid ${pid})`));

/**
 * The banner area: update(state) shows the run's banners; notice(text, tone) adds a dismissible
 * one; partial(text) says the page holds only the run's latest events (one such notice at most).
 */
export function createBanners(container, { t }) {
  let notices = [];
  let drawnKey = '';
  let last = null;

  // The page's count of what it left out, in the page's language; once the run has ended
  // without the promise that the page catches up.
  const behind = (line, ended) => {
    const count = behindCount(line);
    return count === null ? line : t(ended ? 'window.behind.ended' : 'window.behind', { count });
  };

  function draw(state, force = false) {
    last = state;
    const ended = TERMINAL.has(state?.status);
    const shownNotices = notices.map((n) => (n.kind === 'window'
      ? { ...n, lines: n.lines.map((line) => behind(line, ended)) } : n));
    const banners = [...(state ? bannersFor(state, t) : []), ...shownNotices];
    const key = JSON.stringify(banners);
    if (key === drawnKey && !force) return;
    drawnKey = key;
    container.replaceChildren(...banners.map((b, index) => {
      const box = document.createElement('div');
      box.className = `banner banner-${b.tone}`;
      box.dataset.banner = b.kind;
      box.setAttribute('role', b.tone === 'bad' ? 'alert' : 'status');
      const title = document.createElement('strong');
      title.textContent = b.titleKey ? t(b.titleKey) : b.title;
      box.append(title);
      // The first lines are shown; the rest fold away so the live view keeps its room.
      const shown = b.kind === 'deadlock' ? 2 : 1;
      const list = (lines) => {
        const ul = document.createElement('ul');
        for (const line of lines) {
          const li = document.createElement('li');
          li.textContent = line;
          ul.append(li);
        }
        return ul;
      };
      if (b.lines?.length) box.append(list(b.lines.slice(0, shown)));
      if (b.lines?.length > shown) {
        const more = document.createElement('details');
        const summary = document.createElement('summary');
        summary.textContent = t('banner.more', { count: b.lines.length - shown });
        more.append(summary, list(b.lines.slice(shown)));
        box.append(more);
      }
      if (b.notice) {
        const close = document.createElement('button');
        close.type = 'button';
        close.className = 'banner-close';
        close.textContent = '×';
        close.setAttribute('aria-label', t('banner.dismiss'));
        close.addEventListener('click', () => {
          notices = notices.filter((_, i) => i !== index - (banners.length - notices.length));
          draw(last, true);
        });
        box.append(close);
      }
      return box;
    }));
  }

  return {
    element: container,
    update: (state) => draw(state),
    refresh: () => draw(last, true),
    notice(text, tone = 'info', title = null) {
      notices = [...notices.slice(-2), { kind: 'notice', tone, title: title ?? t('banner.notice'), lines: [text], notice: true }];
      draw(last, true);
    },
    partial(text) {
      // The title is looked up when drawn, so it follows a change of language.
      notices = [...notices.filter((n) => n.kind !== 'window').slice(-2),
        { kind: 'window', tone: 'info', titleKey: 'window.banner', lines: text ? [text] : [], notice: true }];
      draw(last, true);
    },
    clearNotices() { notices = []; draw(last, true); },
    destroy() { container.replaceChildren(); },
  };
}
