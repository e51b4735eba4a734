// Run controls (run, stop, pause view, speed, step mode, step, language) and keyboard shortcuts.

export const SPEEDS = [0.1, 0.25, 0.5, 1, 1.5, 2, 3, 4];
const DEFAULT_SPEED_INDEX = SPEEDS.indexOf(1);

/** "0.25×", "1×": the label of a speed. */
export function speedLabel(speed) {
  return `${Number(speed.toFixed(2))}×`;
}

// Input types that take no typed text; of those, a checkbox and a radio keep Space to toggle.
const NO_TEXT = new Set(['button', 'submit', 'reset', 'range', 'color', 'file', 'image',
  'checkbox', 'radio']);
const SPACE_TOGGLES = new Set(['checkbox', 'radio']);

/** Whether `key` pressed on `target` belongs to the field itself, not to the page's shortcuts. */
export function fieldOwnsKey(target, key) {
  if (target?.isContentEditable) return true;
  const tag = target?.tagName ?? '';
  if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
  if (tag !== 'INPUT') return false;
  const type = String(target.type || 'text').toLowerCase();
  if (!NO_TEXT.has(type)) return true; // a text, number or search field: keys type in it
  return key === ' ' && SPACE_TOGGLES.has(type);
}

/**
 * Bind the toolbar's buttons. `actions` has run(), runRefused(), stop(), setPaused(bool),
 * setSpeed(x), setStepMode(bool), step(), toggleLang(); each button only calls its action.
 */
export function createControls(toolbar, header, { actions }) {
  const button = (name) => toolbar.querySelector(`[data-action="${name}"]`);
  const pauseButton = button('pause');
  const stepButton = button('step');
  const stopButton = button('stop');
  const runButton = button('run');
  const speedInput = toolbar.querySelector('[data-speed]');
  const speedOutput = toolbar.querySelector('[data-speed-label]');
  const stepModeBox = toolbar.querySelector('[data-step-mode]');
  // active: the shown run can be stopped; running: the page's own run is still going, so Run waits.
  const ui = { paused: false, speedIndex: DEFAULT_SPEED_INDEX, stepMode: false, active: false,
    running: false };

  function setSpeedIndex(index) {
    ui.speedIndex = Math.max(0, Math.min(SPEEDS.length - 1, index));
    speedInput.value = String(ui.speedIndex);
    speedOutput.textContent = speedLabel(SPEEDS[ui.speedIndex]);
    actions.setSpeed(SPEEDS[ui.speedIndex]);
  }
  function setPaused(paused) {
    ui.paused = paused;
    actions.setPaused(paused);
    render();
  }
  function setStepMode(on) {
    ui.stepMode = on;
    stepModeBox.checked = on;
    actions.setStepMode(on);
    render();
  }
  function render() {
    pauseButton.setAttribute('aria-pressed', String(ui.paused));
    pauseButton.dataset.i18n = ui.paused ? 'controls.resume' : 'controls.pause';
    pauseButton.textContent = actions.t(pauseButton.dataset.i18n);
    stopButton.disabled = !ui.active;
    runButton.disabled = ui.running;
    stepButton.disabled = !(ui.active && ui.stepMode);
  }

  runButton.addEventListener('click', () => actions.run());
  stopButton.addEventListener('click', () => actions.stop());
  pauseButton.addEventListener('click', () => setPaused(!ui.paused));
  stepButton.addEventListener('click', () => actions.step());
  speedInput.addEventListener('input', () => setSpeedIndex(Number(speedInput.value)));
  stepModeBox.addEventListener('change', () => setStepMode(stepModeBox.checked));
  header.querySelector('[data-action="lang"]').addEventListener('click', () => actions.toggleLang());

  const shortcuts = {
    r: () => (ui.running ? actions.runRefused() : actions.run()),
    s: () => ui.active && actions.stop(),
    ' ': () => setPaused(!ui.paused),
    n: () => ui.active && ui.stepMode && actions.step(),
    '+': () => setSpeedIndex(ui.speedIndex + 1),
    '=': () => setSpeedIndex(ui.speedIndex + 1),
    '-': () => setSpeedIndex(ui.speedIndex - 1),
    l: () => actions.toggleLang(),
  };

  /**
   * Handle a keydown; returns true when it was a shortcut. Typing in a field is left alone.
   * Space pauses the view wherever the focus is, a button too (Enter still presses it): after
   * a click on Run the focus stays there, and Space must not start a second run.
   */
  function handleKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return false;
    if (fieldOwnsKey(event.target, event.key)) return false;
    const action = shortcuts[event.key.length === 1 ? event.key.toLowerCase() : ''];
    if (!action) return false;
    event.preventDefault();
    action();
    return true;
  }

  render();
  return {
    element: toolbar,
    handleKey,
    get ui() {
      return { paused: ui.paused, speed: SPEEDS[ui.speedIndex], stepMode: ui.stepMode };
    },
    setSpeedIndex,
    setPaused,
    /**
     * Reflect the run: whether the shown one is active (stop/step enabled), whether the page's
     * own run is still going (Run disabled) and the step mode.
     */
    update({ active, running, stepMode }) {
      if (active !== undefined) ui.active = active;
      if (running !== undefined) ui.running = running;
      if (stepMode !== undefined) {
        ui.stepMode = stepMode;
        stepModeBox.checked = stepMode;
      }
      render();
    },
    refresh: render,
  };
}

/** Show the websocket's state ('connecting' | 'open' | 'closed') in the header's pill. */
export function showConnection(pill, status, t) {
  pill.dataset.connection = status;
  const text = pill.querySelector('.conn-text');
  text.dataset.i18n = `conn.${status}`;
  text.textContent = t(text.dataset.i18n);
}

/** Tabs with arrow-key navigation (WAI-ARIA tabs pattern); onShow(id) after each switch. */
export function bindTabs(tablist, root, onShow) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];
  function show(tab, focus = false) {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute('aria-selected', String(selected));
      other.tabIndex = selected ? 0 : -1;
      root.querySelector(`#${other.getAttribute('aria-controls')}`).hidden = !selected;
    }
    if (focus) tab.focus();
    onShow(tab.dataset.tab);
  }
  tablist.addEventListener('click', (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) show(tab);
  });
  tablist.addEventListener('keydown', (event) => {
    const index = tabs.indexOf(document.activeElement);
    const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
    if (index < 0 || !(event.key in moves)) return;
    event.preventDefault();
    show(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
  });
  return {
    show: (id) => show(tabs.find((tab) => tab.dataset.tab === id)),
    get current() { return tabs.find((tab) => tab.getAttribute('aria-selected') === 'true')?.dataset.tab; },
  };
}
