// The Runs list: this server's runs and recorded ones, newest first; choosing one replays it.

import { verdictCounts } from './i18n_verdicts.js';

/** The states of a run that has not ended yet. */
export const ACTIVE = new Set(['starting', 'running']);

/** "850 ms", "12.3 s", "2 min 05 s": a run's duration in seconds, for a list row. */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
}

/** Newest first (by start time, then id so the order is stable). */
export function newestFirst(runs) {
  return [...(runs ?? [])].sort((p, q) => (Number(q.started) || 0) - (Number(p.started) || 0)
    || String(q.id).localeCompare(String(p.id)));
}

function startedText(started, lang) {
  if (!started) return '';
  const when = new Date(started * 1000);
  const sameDay = when.toDateString() === new Date().toDateString();
  const locale = lang === 'zh' ? 'zh-CN' : 'en-GB';
  const time = when.toLocaleTimeString(locale, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return sameDay ? time : `${when.toLocaleDateString(locale)} ${time}`;
}

/**
 * Create the Runs list in `container`.
 * update(runs) redraws from run summaries (the `runs` frames); mark({ live, shown }) flags
 * the live run and the one on screen; onOpen(summary) fires on a click or Enter. Up and
 * Down move between rows, Home and End to the ends.
 */
export function createRunsList(container, { i18n, onOpen }) {
  const t = (key, vars) => i18n.t(key, vars);
  const list = document.createElement('ol');
  list.className = 'runs-list';
  list.dataset.runsList = '';
  const empty = document.createElement('p');
  empty.className = 'runs-empty';
  container.append(list, empty);
  let runs = [];
  let marks = { live: null, shown: null };

  function row(summary) {
    const li = document.createElement('li');
    li.className = 'run-row';
    li.dataset.runId = summary.id;
    li.dataset.state = summary.state ?? '';
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'run-open';
    button.dataset.openRun = summary.id;
    const title = document.createElement('span');
    title.className = 'run-title';
    title.textContent = i18n.pick(summary.title) || summary.scenario || summary.id;
    const state = document.createElement('span');
    state.className = 'run-state';
    state.dataset.state = summary.state ?? '';
    state.textContent = t(`status.${summary.state}`);
    const end = summary.ended ?? (ACTIVE.has(summary.state) ? Date.now() / 1000 : null);
    const facts = [startedText(summary.started, i18n.lang),
      end != null && summary.started ? formatDuration(end - summary.started) : '',
      t('runs.events', { n: summary.events ?? 0 }), summary.id];
    const meta = document.createElement('span');
    meta.className = 'run-meta';
    meta.textContent = facts.filter(Boolean).join(' · ');
    button.append(title, state, meta);
    const verdicts = verdictCounts(summary.verdicts, t);
    if (verdicts) {
      const v = document.createElement('span');
      v.className = 'run-verdicts';
      v.textContent = verdicts;
      button.append(v);
    }
    if (summary.id === marks.shown) button.setAttribute('aria-current', 'true');
    if (summary.id === marks.live) li.dataset.live = '';
    button.addEventListener('click', () => onOpen(summary));
    li.append(button);
    return li;
  }

  function render() {
    const focused = document.activeElement?.dataset?.openRun;
    list.replaceChildren(...runs.map(row));
    empty.textContent = runs.length ? '' : t('runs.empty');
    container.dataset.count = String(runs.length);
    if (focused) list.querySelector(`[data-open-run="${CSS.escape(focused)}"]`)?.focus();
  }

  list.addEventListener('keydown', (event) => {
    const buttons = [...list.querySelectorAll('.run-open')];
    const index = buttons.indexOf(document.activeElement);
    const moves = { ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: buttons.length - 1 };
    if (index < 0 || !(event.key in moves)) return;
    event.preventDefault();
    buttons[Math.max(0, Math.min(buttons.length - 1, moves[event.key]))].focus();
  });

  return {
    element: list,
    update(next) {
      runs = newestFirst(next);
      render();
    },
    mark(next) {
      marks = { ...marks, ...next };
      render();
    },
    refresh: render,
    get runs() { return runs; },
  };
}
