// The message panel: one token's details (value, bytes, pickle opcodes, timing, corruption).

import { describeToken } from './tokendetail.js';

function row(dl, label, value, className = '') {
  const dt = document.createElement('dt');
  dt.textContent = label;
  const dd = document.createElement('dd');
  dd.textContent = value;
  if (className) dd.className = className;
  dl.append(dt, dd);
}

const ms = (value) => (value == null ? '—' : `${value.toFixed(3)} ms`);

/** The panel; show(token) picks a message, update(state) follows its status as the run goes on. */
export function createMessagePanel(container, { t }) {
  let selected = null; // send seq of the token shown
  let drawn = '';

  function draw(state, force = false) {
    const token = selected == null ? null : state?.tokens?.[selected] ?? null;
    const key = token ? `${token.seq}:${token.status}:${token.corrupt}:${t('message.title')}` : t('message.empty');
    if (key === drawn && !force) return;
    drawn = key;
    container.dataset.seq = token ? String(token.seq) : '';
    container.dataset.corrupt = token?.corrupt ? 'true' : 'false';
    if (!token) {
      const p = document.createElement('p');
      p.className = 'muted message-empty';
      p.textContent = t('message.empty');
      container.replaceChildren(p);
      return;
    }
    const info = describeToken(token);
    const name = (pid) => (pid == null ? '?' : state.processes?.[pid]?.name ?? `pid ${pid}`);
    const pipe = state.pipes?.[token.pipe]?.name ?? token.pipe;
    const title = document.createElement('h3');
    title.textContent = t('message.title', { seq: token.seq, pipe, dir: token.dir });
    const parts = [title];
    if (info.corrupt) {
      const bad = document.createElement('p');
      bad.className = 'message-corrupt';
      bad.setAttribute('role', 'alert');
      bad.textContent = `${t('banner.corrupt')}: ${info.corrupt}`;
      parts.push(bad);
    }
    const dl = document.createElement('dl');
    dl.className = 'message-facts';
    row(dl, t('message.route'), `${name(token.fromPid)} → ${name(token.toPid)}`);
    const unseen = token.sendUnseen ? ` (${t('window.sendUnseen')})` : '';
    row(dl, t('message.status'), t(`message.${info.status ?? 'queued'}`) + unseen, `status-${info.status}`);
    row(dl, t('message.value'), `${info.repr} (${info.type || info.kind})`, 'mono');
    row(dl, t('message.size'), `${info.size} B`);
    row(dl, t('message.hash'), info.recvHash && info.recvHash !== info.hash ? `${info.hash} ≠ ${info.recvHash}` : info.hash, 'mono');
    row(dl, t('message.latency'), ms(info.times.latencyMs));
    parts.push(dl);
    if (info.hex) {
      const hex = document.createElement('pre');
      hex.className = 'message-hex';
      hex.textContent = `${info.hex}\n${info.ascii}`;
      parts.push(hex);
    }
    if (info.opcodes.length) {
      const ops = document.createElement('ol');
      ops.className = 'message-opcodes';
      for (const op of info.opcodes) {
        const li = document.createElement('li');
        li.textContent = op.text;
        ops.append(li);
      }
      parts.push(ops);
    }
    container.replaceChildren(...parts);
  }

  return {
    element: container,
    get selected() { return selected; },
    show(token, state) {
      selected = token?.seq ?? null;
      draw(state, true);
    },
    /** Follow the run; with nothing picked yet, the first corrupted frame is picked for the reader. */
    update(state) {
      if (selected == null && state?.counts?.corrupt) {
        const seq = (state.delivered ?? []).find((s) => state.tokens[s]?.corrupt);
        if (seq != null) selected = seq;
      }
      draw(state);
    },
    reset() { selected = null; draw(null, true); },
    refresh(state) { draw(state, true); },
    destroy() { container.replaceChildren(); },
  };
}
