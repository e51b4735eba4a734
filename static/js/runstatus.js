// The status row above the live view: the shown run's state, what it is, and its export links.

/**
 * Bind the status row. update({ run, state, selected, stepping, replaying }) shows the run
 * on screen (`run` = { id, scenario, summary }), or what to do when there is none.
 */
export function createRunStatus(box, { i18n, api }) {
  const t = (key, vars) => i18n.t(key, vars);
  const chip = box.querySelector('[data-status-chip]');
  const text = box.querySelector('[data-status-text]');
  const exports = box.querySelector('[data-exports]');
  let exported = null;

  return {
    element: box,
    update({ run, state, selected, stepping, replaying }) {
      const status = run.id ? state.status : 'idle';
      box.dataset.status = status;
      document.body.dataset.status = status;
      document.body.dataset.run = run.id ?? '';
      chip.textContent = run.id ? t(`status.${status}`) : '';
      const title = run.scenario ? i18n.pick(run.scenario.title) : '';
      const picked = selected ? i18n.pick(selected.title) : '';
      text.textContent = run.id
        ? [replaying ? t('replay.tag') : '', title, run.id, run.summary?.start_method,
          state.message, stepping ? t('status.stepHint') : ''].filter(Boolean).join(' · ')
        : (picked ? t('status.ready', { title: picked }) : t('status.idle'));
      exports.hidden = !run.id;
      if (run.id && run.id !== exported) {
        exported = run.id;
        for (const link of exports.querySelectorAll('[data-export]')) {
          link.href = api.exportUrl(run.id, link.dataset.export);
        }
      }
    },
  };
}
