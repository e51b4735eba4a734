// The views around a run: banners, status row, live view, sequence chart and the side tabs.

import { createBanners } from './banner.js';
import { bindTabs } from './controls.js';
import { createEventLog } from './eventlog.js';
import { createMessagePanel } from './message.js';
import { createOutputPanel } from './output.js';
import { createRunStatus } from './runstatus.js';
import { createSourcePanel } from './source.js';
import { createStatsPanel } from './stats.js';

/**
 * Build the panels in the page. update({ run, state, selected, replaying, stepping, refused,
 * invalid }) redraws the status row, the banners and the side tab on show (the caller throttles it); draw(state,
 * nowMs, clockNs) draws the live view every frame at recorded time clockNs; refresh(...) relabels everything after a change of
 * language; `sinks` follow the event stream (see feed.js). onTabChange() fires on a tab switch.
 */
export function createPanels({ $, i18n, api, model, onTabChange }) {
  const t = (key, vars) => i18n.t(key, vars);
  const banners = createBanners($('[data-banners]'), { t });
  const source = createSourcePanel($('[data-source-panel]'), { t });
  const output = createOutputPanel($('[data-output-panel]'), { t });
  const eventlog = createEventLog($('[data-eventlog]'), { t });
  const stats = createStatsPanel($('[data-stats-panel]'), { t, api });
  const message = createMessagePanel($('[data-message-panel]'), { t });
  const runStatus = createRunStatus($('[data-run-status]'), { i18n, api });
  const tabs = bindTabs($('.side .tabs'), $('.side'), onTabChange);
  const views = { live: null, chart: null };

  // The live view and the sequence chart load on their own: if one fails, the rest still works.
  async function load() {
    const [render, chart] = await Promise.all([import('./render.js'), import('./seqchart.js')]
      .map((loading) => loading.catch((error) => { console.error(error); return null; })));
    const onTokenClick = (token) => {
      message.show(token, model.state);
      tabs.show('message');
    };
    if (render) views.live = render.createLiveView($('[data-live]'), { t, onTokenClick });
    else $('[data-live]').textContent = t('live.unavailable');
    if (chart) views.chart = chart.createSequenceChart($('[data-sequence-panel]'), { t });
  }

  return {
    banners,
    source,
    load,
    sinks: [{ add: (events) => eventlog.push(events), reset: () => eventlog.reset() },
      output, message],
    draw: (state, nowMs, clockNs) => views.live?.update(state, nowMs, clockNs),
    /** How long each blocked process had waited in the live view's last frame (ms, by pid). */
    waits: () => views.live?.waits() ?? {},
    update({ run, state, selected, replaying, stepping, refused, invalid }) {
      runStatus.update({ run, state, selected, replaying, stepping, refused, invalid });
      banners.update(state);
      const shown = tabs.current;
      if (shown === 'source') source.update(run.scenario ?? selected, run.id ? state : null);
      if (shown === 'output') output.update(state);
      if (shown === 'events') eventlog.update(state.window);
      if (shown === 'stats') stats.update(state);
      if (shown === 'sequence') views.chart?.update(state);
      if (shown === 'message') message.update(state);
    },
    refresh({ run, state, selected }) {
      source.refresh(run.scenario ?? selected, run.id ? state : null);
      output.refresh(state);
      eventlog.refresh(state.window);
      message.refresh(state);
      banners.refresh();
    },
  };
}
