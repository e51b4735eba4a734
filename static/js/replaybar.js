// The replay bar: which run is replayed, play/pause, next call, the time scrubber, back to live.

const STEPS = 1000; // scrubber resolution: a thousandth of the run's time span

/** "12.5 ms", "3.20 s": a time offset in ns for the scrubber's label. */
export function formatOffset(ns) {
  const ms = Math.max(0, ns) / 1e6;
  return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/**
 * Bind the replay bar. onPlay() toggles play/pause, onStep() shows the next call,
 * onScrub(fraction) seeks (at most once per animation frame while dragging), onLive()
 * leaves the replay. update(view) reflects the replay: { runId, title, fraction, offsetNs,
 * spanNs, paused, ended }.
 */
export function createReplayBar(element, { t, onPlay, onStep, onScrub, onLive }) {
  const button = (name) => element.querySelector(`[data-replay-action="${name}"]`);
  const play = button('play');
  const scrubber = element.querySelector('[data-replay-scrubber]');
  const label = element.querySelector('[data-replay-label]');
  const time = element.querySelector('[data-replay-time]');
  let pending = null;
  let dragging = false;
  let last = null;

  function scrubSoon() {
    if (pending != null) return;
    pending = requestAnimationFrame(() => {
      pending = null;
      onScrub(Number(scrubber.value) / STEPS);
    });
  }

  play.addEventListener('click', () => onPlay());
  button('step').addEventListener('click', () => onStep());
  button('live').addEventListener('click', () => onLive());
  scrubber.addEventListener('input', scrubSoon);
  scrubber.addEventListener('pointerdown', () => { dragging = true; });
  scrubber.addEventListener('pointerup', () => { dragging = false; });
  scrubber.addEventListener('blur', () => { dragging = false; });

  function render() {
    const view = last;
    element.hidden = !view;
    if (!view) return;
    element.dataset.replayRun = view.runId;
    element.dataset.fraction = view.fraction.toFixed(4);
    element.dataset.ended = String(view.ended);
    label.textContent = t('replay.of', { id: view.runId, title: view.title });
    const playing = !view.paused && !view.ended;
    play.setAttribute('aria-pressed', String(playing));
    play.textContent = t(playing ? 'replay.pause' : view.ended ? 'replay.again' : 'replay.play');
    if (!dragging && pending == null) scrubber.value = String(Math.round(view.fraction * STEPS));
    time.textContent = `${formatOffset(view.offsetNs)} / ${formatOffset(view.spanNs)}`;
  }

  return {
    element,
    update(view) {
      last = view;
      render();
    },
    hide() {
      last = null;
      render();
    },
    refresh: render,
    steps: STEPS,
  };
}
