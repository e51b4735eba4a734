// Page wiring: builds every component, joins the socket to the model, runs the frame loop.

import { ApiError, createApi } from './api.js';
import { createBanners } from './banner.js';
import { bindTabs, createControls, showConnection } from './controls.js';
import { createEventLog } from './eventlog.js';
import { createGallery } from './gallery.js';
import { createI18n, pageLanguage, rememberLanguage, translateTree } from './i18n.js';
import { createMessagePanel } from './message.js';
import { createRunModel } from './model.js';
import { createOutputPanel } from './output.js';
import { createPlayback } from './playback.js';
import { createRecords } from './records.js';
import { createRunStatus } from './runstatus.js';
import { createSocket, socketUrl } from './socket.js';
import { createSourcePanel } from './source.js';
import { createCallCounter, summarise } from './statehook.js';
import { createStatsPanel } from './stats.js';

const PANEL_INTERVAL_MS = 150; // panels redraw a few times a second; the live view every frame
const ACTIVE = new Set(['starting', 'running']);
const body = document.body;
const $ = (selector) => document.querySelector(selector);
const i18n = createI18n(pageLanguage(location, body.dataset.lang));
const t = (key, vars) => i18n.t(key, vars);
const api = createApi({ base: body.dataset.api, token: body.dataset.token });
const model = createRunModel();
const playback = createPlayback();
const run = { id: null, scenario: null, summary: null };
const callCounter = createCallCounter();

const banners = createBanners($('[data-banners]'), { t });
const source = createSourcePanel($('[data-source-panel]'), { t });
const output = createOutputPanel($('[data-output-panel]'), { t });
const eventlog = createEventLog($('[data-eventlog]'), { t });
const stats = createStatsPanel($('[data-stats-panel]'), { t });
const message = createMessagePanel($('[data-message-panel]'), { t });
const views = { live: null, chart: null };
let dirty = true;
let lastPanels = -Infinity;

function notify(error) {
  const text = error instanceof ApiError ? error.message : t('error.network', { error: error.message });
  banners.notice(text, 'bad', t('banner.error'));
}

const gallery = createGallery($('.gallery'), {
  i18n,
  onRun: () => actions.run(),
  onSelect: (scenario) => {
    if (!run.id) source.update(scenario, null);
    dirty = true;
  },
});

const actions = {
  t,
  async run() {
    const spec = gallery.spec();
    if (!spec) return;
    spec.step_mode = controls.ui.stepMode;
    banners.clearNotices();
    try {
      beginRun(await api.startRun(spec), gallery.selected);
    } catch (error) {
      if (error instanceof ApiError && error.status === 422) gallery.showServerError(error.detail);
      else notify(error);
    }
  },
  stop: () => run.id && api.stopRun(run.id).catch(notify),
  step: () => run.id && api.step(run.id).catch(notify),
  setPaused: (paused) => (paused ? playback.pause() : playback.resume()),
  setSpeed: (speed) => playback.setSpeed(speed),
  setStepMode: (on) => run.id && ACTIVE.has(run.summary?.state) && api.setStepMode(run.id, on).catch(notify),
  toggleLang: () => i18n.setLang(i18n.lang === 'en' ? 'zh' : 'en'),
};
const controls = createControls($('.toolbar'), $('.app-header'), { actions });
const tabs = bindTabs($('.side .tabs'), $('.side'), () => { dirty = true; lastPanels = -Infinity; });
bindTabs($('[data-aside-tabs]'), $('.gallery'), () => {});
const runStatus = createRunStatus($('[data-run-status]'), { i18n, api });

// A new run, or a snapshot that replaces everything seen so far: every view starts over.
function resetView(summary) {
  model.reset(summary);
  playback.clear();
  for (const view of [eventlog, output, message, callCounter]) view.reset();
}

// The one path from events into the model and panels, for live runs and replays alike.
function applyEvents(due) {
  if (!due.length) return;
  model.apply(due);
  eventlog.push(due);
  callCounter.add(due);
  dirty = true;
}

function beginRun(summary, scenario) {
  records.following(summary, scenario);
  Object.assign(run, { id: summary.id, scenario, summary });
  resetView(summary);
  const empty = $('[data-live-empty]');
  if (empty) empty.hidden = true;
  controls.update({ active: true, stepMode: Boolean(summary.step_mode) });
  socket.subscribe(summary.id);
  dirty = true;
}

function onFrame(frame) {
  const mineNow = !records.replaying; // a replay on screen: the live run's frames wait
  if (frame.type === 'snapshot' && frame.run?.id === run.id && mineNow) {
    resetView(frame.run);
    playback.push(frame.events ?? []);
    if (frame.notice) banners.notice(frame.notice, 'info');
  } else if (frame.type === 'events' && frame.run === run.id && mineNow) {
    playback.push(frame.events ?? []);
  } else if (frame.type === 'runs' || frame.type === 'hello') {
    records.runs(frame.runs ?? []);
    const mine = (frame.runs ?? []).find((r) => r.id === run.id);
    if (mine && mineNow) {
      run.summary = mine;
      controls.update({ active: ACTIVE.has(mine.state), stepMode: Boolean(mine.step_mode) });
    }
  } else if (frame.type === 'error') {
    banners.notice([frame.message, frame.detail].filter(Boolean).join(' — '), 'bad', t('banner.error'));
  }
}

const socket = createSocket(socketUrl(location, body.dataset.ws, body.dataset.token), {
  onFrame,
  onStatus: (status) => showConnection($('.conn'), status, t),
});
const records = createRecords({ root: body, i18n, api, gallery, playback, controls, socket, run,
  restart: resetView, apply: applyEvents, follow: beginRun, notify });

function updatePanels() {
  const state = model.state;
  runStatus.update({ run, state, selected: gallery.selected, replaying: records.replaying,
    stepping: run.id && controls.ui.stepMode && ACTIVE.has(run.summary?.state) });
  banners.update(state);
  const shown = tabs.current;
  if (shown === 'source') source.update(run.scenario ?? gallery.selected, run.id ? state : null);
  if (shown === 'output') output.update(state);
  if (shown === 'events') eventlog.update();
  if (shown === 'stats') stats.update(state);
  if (shown === 'sequence') views.chart?.update(state);
  if (shown === 'message') message.update(state);
}

function frame(now) {
  applyEvents(playback.advance(now));
  records.tick(now);
  views.live?.update(model.state, now);
  if (dirty && now - lastPanels >= PANEL_INTERVAL_MS) {
    dirty = false;
    lastPanels = now;
    updatePanels();
  }
  requestAnimationFrame(frame);
}

function applyLanguage() {
  document.documentElement.lang = i18n.lang === 'zh' ? 'zh-CN' : 'en';
  body.dataset.lang = i18n.lang;
  rememberLanguage(i18n.lang);
  translateTree(body, t);
  controls.refresh();
  gallery.refresh();
  source.refresh(run.scenario ?? gallery.selected, run.id ? model.state : null);
  output.refresh(model.state);
  eventlog.refresh();
  message.refresh(model.state);
  banners.refresh();
  records.refresh();
  dirty = true;
}

// The live view and the sequence chart load on their own: if one fails, the rest still works.
async function loadViews() {
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

i18n.onChange(applyLanguage);
document.addEventListener('keydown', (event) => controls.handleKey(event));
applyLanguage();
api.scenarios().then((list) => gallery.setScenarios(list),
  (error) => gallery.setError(t('gallery.failed', { error: error.message })));
loadViews().finally(() => requestAnimationFrame(frame));
window.pipescope = Object.freeze({
  ready: true,
  state: () => summarise(model.state, {
    run, playback, controls: controls.ui, lang: i18n.lang, banners: $('[data-banners]'),
    callsStarted: callCounter.started, replay: records.hook,
  }),
});
