// The status row above the live view: the shown run's state, what it is, and its export links.

import { outcomeText } from './i18n_run.js';

// Several times a second under a flood: an unchanged text is not set again (no relayout).
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Bind the status row. update({ run, state, selected, stepping, replaying, refused, invalid })
 * shows the run on screen (`run` = { id, scenario, summary }), or what to do when there is
 * none; first, why a Run did nothing: the page's run still going (`refused`), or the names of
 * the parameters to fix (`invalid`).
 */
export function createRunStatus(box, { i18n, api }) {
  const t = (key, vars) => i18n.t(key, vars);
  const chip = box.querySelector('[data-status-chip]');
  const text = box.querySelector('[data-status-text]');
  const notice = box.querySelector('[data-status-notice]');
  const exports = box.querySelector('[data-exports]');
  let exported = null;

  return {
    element: box,
    update({ run, state, selected, stepping, replaying, refused = false, invalid = [] }) {
      const status = run.id ? state.status : 'idle';
      for (const [node, key, value] of [[box, 'status', status],
        [document.body, 'status', status], [document.body, 'run', run.id ?? '']]) {
        if (node.dataset[key] !== value) node.dataset[key] = value;
      }
      setText(chip, run.id ? t(`status.${status}`) : '');
      const title = run.scenario ? i18n.pick(run.scenario.title) : '';
      const picked = selected ? i18n.pick(selected.title) : '';
      setText(text, run.id
        ? [replaying ? t('replay.tag') : '', title, run.id, run.summary?.start_method,
          outcomeText(state.reason, state.message, t), stepping ? t('status.stepHint') : ''].filter(Boolean).join(' · ')
        : (picked ? t('status.ready', { title: picked }) : t('status.idle')));
      const why = refused ? t('status.runGoing')
        : invalid.length ? t('status.fixParams', { fields: invalid.join(', ') }) : '';
      setText(notice, why);
      if (notice.hidden !== !why) notice.hidden = !why;
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
