// Live statistics: totals for the run and, per pipe and direction, traffic and latency.

import { formatBytes } from './render_process.js';
import { cell, createAnalysisStats, formatNs } from './stats_analysis.js';

/** Per pipe and direction: sent, delivered, queued frames and bytes, mean latency (ms). */
export function laneStats(state) {
  const rows = [];
  for (const pipe of Object.values(state.pipes ?? {})) {
    for (const [dir, lane] of Object.entries(pipe.lanes ?? {})) {
      rows.push({
        pipe: pipe.name ?? pipe.id,
        dir,
        sent: lane.sent ?? 0,
        delivered: lane.received ?? 0,
        queued: lane.tokens?.length ?? 0,
        queuedBytes: lane.queued ?? 0,
        capacity: lane.capacity ?? null,
        bytes: lane.bytes ?? 0,
        latencyMs: lane.timed ? lane.latencyNs / lane.timed / 1e6 : null,
      });
    }
  }
  return rows;
}

const fmtMs = (ms) => (ms == null ? '—' : ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`);

/** The statistics panel; update(state) redraws (the caller throttles it). */
export function createStatsPanel(container, { t, api }) {
  const analysis = createAnalysisStats({ t, api });
  return {
    element: container,
    update(state) {
      const counts = state?.counts ?? { events: 0, calls: 0, messages: 0, corrupt: 0 };
      const held = state?.window ?? null;
      const elapsed = state?.t0 != null && state?.tNow != null ? (state.tNow - state.t0) / 1e6 : null;
      const totals = document.createElement('dl');
      totals.className = 'stat-totals';
      const pairs = [
        // seqs number every event of the run, so the last one counts those the page missed too.
        ['events', held ? state.lastSeq : counts.events], ['calls', counts.calls],
        ['messages', counts.messages],
        ['corrupt', counts.corrupt], ['elapsed', elapsed == null ? '—' : formatNs(elapsed * 1e6)],
      ];
      for (const [key, value] of pairs) {
        const item = document.createElement('div');
        item.className = `stat stat-${key}${key === 'corrupt' && value ? ' bad' : ''}`;
        item.dataset.stat = key;
        const shown = typeof value === 'number' ? value.toLocaleString() : String(value);
        item.append(cell('dt', t(`stats.${key}`)), cell('dd', shown));
        totals.append(item);
      }
      // Without the older calls, every figure but the events counts only what the page holds.
      const scope = held ? [cell('p', t('window.stats', { from: held.from.toLocaleString(),
        skipped: held.skipped.toLocaleString() }), 'stat-window')] : [];
      if (held) container.dataset.window = String(held.from);
      else delete container.dataset.window;
      const rows = state ? laneStats(state) : [];
      if (state) analysis.update(state);
      if (!rows.length) {
        container.replaceChildren(totals, ...scope, cell('p', t('stats.none'), 'muted'), analysis.element);
        return;
      }
      const table = document.createElement('table');
      table.className = 'stat-table';
      const head = document.createElement('tr');
      for (const key of ['pipe', 'direction', 'sentDelivered', 'queued', 'bytes', 'latency']) {
        head.append(cell('th', key === 'pipe' ? t('events.pipe') : t(`stats.${key}`)));
      }
      table.createTHead().append(head);
      const body = table.createTBody();
      for (const row of rows) {
        const tr = document.createElement('tr');
        const queued = `${row.queued.toLocaleString()} · ${formatBytes(row.queuedBytes)}`;
        const sent = `${row.sent.toLocaleString()} → ${row.delivered.toLocaleString()}`;
        tr.append(cell('td', row.pipe), cell('td', row.dir), cell('td', sent, 'num'), cell('td', queued, 'num'),
          cell('td', formatBytes(row.bytes), 'num'), cell('td', fmtMs(row.latencyMs), 'num'));
        body.append(tr);
      }
      container.replaceChildren(totals, ...scope, table, analysis.element);
    },
    destroy() { container.replaceChildren(); },
  };
}
