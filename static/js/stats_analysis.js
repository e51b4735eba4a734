// The analysis's statistics of a run, from the server (GET /api/runs/{id}): per pipe and
// direction, rate, latency percentiles, time blocked and peak queued bytes.

import { TERMINAL } from './banner.js';
import { formatBytes } from './render_process.js';

const REFRESH_MS = 1000; // while a run goes on; once more when it has ended

/** "850 µs", "12.3 ms", "1.20 s" for a duration in nanoseconds; '—' for none. */
export function formatNs(ns) {
  if (ns == null) return '—';
  if (ns < 1e6) return `${Math.round(ns / 1e3)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(ns < 1e7 ? 2 : 1)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}

/** Rows for the table from `analysis.stats` ({pipe: {direction: summary}}), pipes named. */
export function analysisRows(stats, pipes) {
  const rows = [];
  for (const [pipe, directions] of Object.entries(stats ?? {})) {
    for (const [dir, d] of Object.entries(directions)) {
      const blocked = Object.entries(d.blocked_ns ?? {}).filter(([, ns]) => ns > 0);
      rows.push({
        pipe: pipes?.[pipe]?.name ?? pipe,
        dir,
        messages: d.messages ?? 0,
        // Unknown (null) from fewer than two messages: no interval to divide by (a record
        // of an earlier server says 0 for those).
        rate: (d.messages ?? 0) < 2 ? null : d.messages_per_s ?? null,
        throughput: (d.messages ?? 0) < 2 ? null : d.bytes_per_s ?? null,
        latency: d.latency_ns ?? {},
        blocked: blocked.map(([op, ns]) => `${op} ${formatNs(ns)}`).join(' · ') || '—',
        peak: d.capacity ? `${formatBytes(d.peak_queued ?? 0)} / ${formatBytes(d.capacity)}`
          : formatBytes(d.peak_queued ?? 0),
      });
    }
  }
  return rows;
}

/** An element `tag` holding `text`, of class `className` if given. */
export function cell(tag, text, className = '') {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

/**
 * The analysis section of the statistics tab. update(state) asks the server again when the
 * shown run goes on (at most once a second) or has just ended; `element` holds the table.
 */
export function createAnalysisStats({ t, api }) {
  const element = document.createElement('section');
  element.className = 'stat-analysis';
  let asked = { id: null, at: 0, ended: false };
  let shown = null; // [run id, stats] last drawn
  let lastState = null;

  function draw() {
    const [, stats] = shown ?? [null, null];
    const title = cell('h3', t('stats.analysis'));
    const rows = analysisRows(stats, lastState?.pipes);
    if (!rows.length) {
      element.replaceChildren(title, cell('p', t(shown ? 'stats.analysisNone' : 'stats.analysisWait'), 'muted'));
      return;
    }
    // One block a direction: the side panel is narrow for nine columns.
    const blocks = rows.map((row) => {
      const block = document.createElement('div');
      block.className = 'stat-direction';
      block.dataset.direction = `${row.pipe} ${row.dir}`;
      const rate = row.rate == null ? '—'
        : `${row.rate.toFixed(row.rate < 10 ? 1 : 0)}/s · ${formatBytes(Math.round(row.throughput ?? 0))}/s`;
      const latency = ['p50', 'p99', 'max'].map((p) => `${t(`stats.${p}`)} ${formatNs(row.latency[p])}`);
      const facts = [['messages', `${row.messages.toLocaleString()} · ${rate}`],
        ['latency', latency.join(' · ')], ['blocked', row.blocked], ['peak', row.peak]];
      const list = document.createElement('dl');
      for (const [key, value] of facts) {
        const item = document.createElement('div');
        item.dataset.stat = key;
        item.append(cell('dt', t(`stats.analysis.${key}`)), cell('dd', value));
        list.append(item);
      }
      block.append(cell('h4', `${row.pipe} · ${row.dir}`), list);
      return block;
    });
    element.replaceChildren(title, ...blocks);
  }

  async function fetchFor(id) {
    try {
      const detail = await api.run(id);
      if (asked.id !== id) return;
      shown = [id, detail?.analysis?.stats ?? {}];
    } catch {
      if (asked.id === id) shown = [id, {}];
    }
    draw();
  }

  return {
    element,
    update(state) {
      lastState = state;
      const id = state?.run?.id ?? null;
      const ended = TERMINAL.has(state?.status);
      const now = Date.now();
      if (id !== asked.id) shown = null;
      const due = id && (id !== asked.id || (!ended && now - asked.at >= REFRESH_MS)
        || (ended && !asked.ended));
      if (due) {
        asked = { id, at: now, ended };
        fetchFor(id);
      }
      draw();
    },
  };
}
