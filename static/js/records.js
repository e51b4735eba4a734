// Wiring of the Runs list and replays: which run the page shows, the live one or a recorded one.

import { createReplay } from './replay.js';
import { createReplayBar } from './replaybar.js';
import { ACTIVE, createRunsList } from './runs.js';

const BAR_INTERVAL_MS = 100;

/**
 * Join the Runs list, the replay controller and the replay bar to the page.
 * `run` is the page's shown run ({ id, scenario, summary }), changed in place; restart(summary)
 * and apply(events) are the page's own paths into the model and panels, so a replay shows
 * what the live run showed; follow(summary, scenario) makes the live view follow a run.
 */
export function createRecords({ root, i18n, api, gallery, playback, controls, socket, run,
  restart, apply, follow, notify }) {
  const t = (key, vars) => i18n.t(key, vars);
  const live = { id: null, scenario: null, summary: null }; // what the live view followed
  const replay = createReplay({ playback, restart, apply });
  const empty = root.querySelector('[data-live-empty]');
  let lastBar = -Infinity;
  let opening = 0;

  const scenarioOf = (summary) => gallery.find(summary.scenario)
    ?? { id: summary.scenario, title: summary.title };

  function setView(view) {
    document.body.dataset.view = view;
    list.mark({ shown: run.id, live: live.id });
  }

  async function open(summary) {
    if (ACTIVE.has(summary.state)) {
      if (replay.active) close(false);
      follow(summary, scenarioOf(summary));
      return;
    }
    const ticket = ++opening; // a later choice wins over a slower earlier one
    let events;
    try {
      events = await api.events(summary.id);
    } catch (error) {
      notify(error);
      return;
    }
    if (ticket !== opening) return;
    if (!replay.active) Object.assign(live, run);
    Object.assign(run, { id: summary.id, scenario: scenarioOf(summary), summary });
    if (empty) empty.hidden = true;
    controls.update({ active: false });
    replay.open(summary, events);
    controls.setPaused(false);
    setView('replay');
    tick(0, true);
  }

  /** Leave the replay; with `resume`, show the live view's run again (from a fresh snapshot). */
  function close(resume = true) {
    if (!replay.active) return;
    opening += 1;
    replay.close();
    bar.hide();
    if (resume) {
      Object.assign(run, live);
      restart(run.summary);
      if (run.id) socket.subscribe(run.id);
      if (empty) empty.hidden = Boolean(run.id);
      controls.update({ active: ACTIVE.has(run.summary?.state) });
      controls.setPaused(false); // a replay paused is no reason to hold the live view
    }
    setView('live');
  }

  function playPause() {
    if (replay.ended) {
      replay.seek(replay.span.t0);
      controls.setPaused(false);
    } else {
      controls.setPaused(!controls.ui.paused);
    }
    tick(0, true);
  }

  function stepOne() {
    if (!controls.ui.paused) controls.setPaused(true);
    apply(playback.stepOne());
    tick(0, true);
  }

  const list = createRunsList(root.querySelector('[data-runs-panel]'), { i18n, onOpen: open });
  const bar = createReplayBar(root.querySelector('[data-replay-bar]'), {
    t,
    onPlay: playPause,
    onStep: stepOne,
    onScrub: (fraction) => {
      // A replay that stood still (paused, or at its end) stays where it is put.
      const still = controls.ui.paused || replay.ended;
      replay.seekFraction(fraction);
      if (still && !controls.ui.paused) controls.setPaused(true);
      tick(0, true);
    },
    onLive: () => close(true),
  });

  /** Move the replay bar with the playback clock, a few times a second. */
  function tick(now, force = false) {
    if (!replay.active || (!force && now - lastBar < BAR_INTERVAL_MS)) return;
    if (!force) lastBar = now;
    const { t0, t1 } = replay.span;
    bar.update({ runId: run.id, title: run.scenario ? i18n.pick(run.scenario.title) : '',
      fraction: replay.fraction, offsetNs: replay.position - t0, spanNs: t1 - t0,
      paused: controls.ui.paused, ended: replay.ended });
  }

  setView('live');
  return {
    open,
    close,
    tick,
    /** The live view follows a new run: a replay on screen ends. */
    following(summary, scenario) {
      if (replay.active) close(false);
      Object.assign(live, { id: summary.id, scenario, summary });
      document.body.dataset.view = 'live';
      list.mark({ shown: summary.id, live: summary.id });
    },
    runs(summaries) {
      list.update(summaries);
      const mine = summaries.find((s) => s.id === live.id);
      if (mine) live.summary = mine;
    },
    refresh() {
      list.refresh();
      bar.refresh();
    },
    get replaying() { return replay.active; },
    /** For the test hook: where the replay stands. */
    get hook() {
      if (!replay.active) return null;
      const { t0, t1 } = replay.span;
      return { run: replay.run.id, shown: replay.shown, total: replay.total,
        fraction: replay.fraction, ended: replay.ended, position: replay.position, t0, t1 };
    },
  };
}
