// Page wiring: builds every component, joins the socket to the model, runs the frame loop.

import { ApiError, createApi } from './api.js';
import { bindTabs, createControls, showConnection } from './controls.js';
import { createFeed, orderSnapshot } from './feed.js';
import { createGallery } from './gallery.js';
import { createI18n, pageLanguage, rememberLanguage, translateTree } from './i18n.js';
import { createRunModel } from './model.js';
import { createAckPacer } from './pacing.js';
import { createPanels } from './panels.js';
import { createPlayback } from './playback.js';
import { createRecords } from './records.js';
import { ACTIVE } from './runs.js';
import { createSkips } from './skips.js';
import { WorkerSocket, createSocket, socketUrl } from './socket.js';
import { createCallCounter, summarise } from './statehook.js';

const PANEL_INTERVAL_MS = 150; // panels redraw a few times a second; the live view every frame
const body = document.body;
const $ = (selector) => document.querySelector(selector);
const i18n = createI18n(pageLanguage(location, body.dataset.lang));
const t = (key, vars) => i18n.t(key, vars);
const api = createApi({ base: body.dataset.api, token: body.dataset.token });
const model = createRunModel();
const playback = createPlayback();
const run = { id: null, scenario: null, summary: null };
// The run this page started or follows, shown or not (a replay may be on screen): while it
// goes on, Run waits; `refused` when R was pressed then, so the status line says why.
const own = { id: null, state: null, refused: false };
const callCounter = createCallCounter();
const pacer = createAckPacer();
let dirty = true;
let lastPanels = -Infinity;

const panels = createPanels({ $, i18n, api, model,
  onTabChange: () => { dirty = true; lastPanels = -Infinity; } });
const { banners } = panels;
const feed = createFeed({ model, playback, sinks: [...panels.sinks, callCounter], onSkip });
// Calls and output lines of the shown run left out to keep up, counted in the banner.
const skips = createSkips({
  onShow: (total) => banners.partial(t('window.behind', { count: total.toLocaleString() })),
});

function onSkip(count, by = 'page') {
  skips.add(count, by);
  dirty = true;
}

function notify(error) {
  const text = error instanceof ApiError ? error.message : t('error.network', { error: error.message });
  banners.notice(text, 'bad', t('banner.error'));
}

const gallery = createGallery($('.gallery'), {
  i18n,
  onRun: () => actions.run(),
  onSelect: (scenario) => {
    if (!run.id) panels.source.update(scenario, null);
    dirty = true;
  },
  onCheck: () => { dirty = true; },
});

const actions = {
  t,
  async run() {
    if (ACTIVE.has(own.state)) return actions.runRefused();
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
  runRefused: () => { own.refused = true; dirty = true; },
  stop: () => run.id && api.stopRun(run.id).catch(notify),
  step: () => run.id && api.step(run.id).catch(notify),
  setPaused: (paused) => (paused ? playback.pause() : playback.resume()),
  setSpeed: (speed) => playback.setSpeed(speed),
  setStepMode: (on) => run.id && ACTIVE.has(run.summary?.state) && api.setStepMode(run.id, on).catch(notify),
  toggleLang: () => i18n.setLang(i18n.lang === 'en' ? 'zh' : 'en'),
};
const controls = createControls($('.toolbar'), $('.app-header'), { actions });
bindTabs($('[data-aside-tabs]'), $('.gallery'), () => {});

function reset(summary) {
  feed.reset(summary);
  skips.reset();
  dirty = true;
}

function apply(events) {
  feed.apply(events);
  dirty = true;
}

function beginRun(summary, scenario) {
  records.following(summary, scenario);
  Object.assign(run, { id: summary.id, scenario, summary });
  Object.assign(own, { id: summary.id, state: summary.state, refused: false });
  reset(summary);
  $('[data-live-empty]')?.toggleAttribute('hidden', true);
  controls.update({ active: true, running: true, stepMode: Boolean(summary.step_mode) });
  socket.subscribe(summary.id);
}

function onSnapshot(frame) {
  // A snapshot of the run already followed resynchronises a page that fell behind: the
  // calls and output lines it leaves out count with those left out before it. A first
  // snapshot's count is told by its notice, and counts in the totals that follow.
  const resync = model.state.lastSeq != null && model.state.run?.id === frame.run?.id;
  reset(frame.run);
  const { events, missing } = orderSnapshot(frame.events);
  skips.add(frame.missing ?? missing, 'server', !resync);
  feed.push(events);
  // A run already over when asked for (back to live after a replay) shows its end at once.
  if (!ACTIVE.has(run.summary?.state) && !ACTIVE.has(frame.run?.state)) playback.releaseAtNextFrame();
  // A snapshot without the run's older calls says so, beside the server's own words.
  // (A WorkerSocket hands a long snapshot on in slices, counting what is missing first.)
  if ((frame.missing ?? missing) > 0 || frame.skipped > 0) banners.partial(frame.notice ?? '');
  else if (frame.notice) banners.notice(frame.notice, 'info');
}

function onFrame(frame) {
  const mineNow = !records.replaying; // a replay on screen: the live run's frames wait
  if (frame.type === 'snapshot' && frame.run?.id === run.id && mineNow) {
    onSnapshot(frame);
  } else if (frame.type === 'events' && frame.run === run.id && mineNow) {
    feed.push(frame.events ?? []);
  } else if (frame.type === 'skipped' && frame.run === run.id && mineNow) {
    onSkip(frame.skipped, frame.by);
  } else if (frame.type === 'runs' || frame.type === 'hello') {
    records.runs(frame.runs ?? []);
    const followed = (frame.runs ?? []).find((r) => r.id === own.id);
    if ((followed || frame.type === 'hello') && (followed?.state ?? null) !== own.state) {
      own.state = followed?.state ?? null;
      controls.update({ running: ACTIVE.has(own.state) });
      dirty = true;
    }
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
  WebSocketImpl: typeof Worker === 'function' ? WorkerSocket : WebSocket,
});
const records = createRecords({ root: body, i18n, api, gallery, playback, controls, socket, run,
  restart: reset, apply, follow: beginRun, notify });

function frame(now) {
  if (feed.pump(now)) dirty = true;
  if (pacer.due(now, feed.backlog, records.replaying)) socket.ack();
  records.tick(now);
  panels.draw(model.state, now, playback.clockNs);
  if (dirty && now - lastPanels >= PANEL_INTERVAL_MS) {
    dirty = false;
    lastPanels = now;
    if (skips.show(now)) dirty = true; // a newer count waits for its turn
    panels.update({ run, state: model.state, selected: gallery.selected,
      replaying: records.replaying, invalid: gallery.invalidFields,
      refused: own.refused && ACTIVE.has(own.state),
      stepping: run.id && controls.ui.stepMode && ACTIVE.has(run.summary?.state) });
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
  panels.refresh({ run, state: model.state, selected: gallery.selected });
  records.refresh();
  dirty = true;
}

i18n.onChange(applyLanguage);
document.addEventListener('keydown', (event) => controls.handleKey(event));
applyLanguage();
api.scenarios().then((list) => gallery.setScenarios(list),
  (error) => gallery.setError(t('gallery.failed', { error: error.message })));
panels.load().finally(() => requestAnimationFrame(frame));
window.pipescope = Object.freeze({
  ready: true,
  state: () => summarise(model.state, {
    run, playback: feed, controls: controls.ui, lang: i18n.lang, banners: $('[data-banners]'),
    callsStarted: callCounter.started, replay: records.hook, skipped: skips.counts,
  }),
  waits: () => panels.waits(),
});
