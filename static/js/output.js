// Each process's printed lines, with its state (running, blocked, exited).

function describeState(process, state, t) {
  if (process.exited) return { key: 'exited', text: t('output.exited', { code: process.exitcode ?? '?' }) };
  if (process.blocked) {
    const pipe = state.pipes?.[process.blocked.pipe]?.name ?? process.blocked.pipe;
    return {
      key: 'blocked',
      text: t('output.blocked', { op: process.blocked.op, pipe, end: process.blocked.end }),
    };
  }
  return { key: 'running', text: t('output.running') };
}

/** The output panel: one box per process, lines appended incrementally. */
export function createOutputPanel(container, { t }) {
  const boxes = new Map(); // pid -> {box, status, pre, count}
  const empty = document.createElement('p');
  empty.className = 'muted';

  function boxFor(process) {
    let entry = boxes.get(process.pid);
    if (entry) return entry;
    const box = document.createElement('article');
    box.className = 'proc-output';
    box.dataset.pid = String(process.pid);
    const head = document.createElement('header');
    const name = document.createElement('strong');
    const status = document.createElement('span');
    status.className = 'proc-status';
    head.append(name, status);
    const pre = document.createElement('pre');
    pre.className = 'proc-lines';
    box.append(head, pre);
    container.append(box);
    entry = { box, name, status, pre, count: 0 };
    boxes.set(process.pid, entry);
    return entry;
  }

  function reset() {
    boxes.clear();
    empty.textContent = t('output.empty');
    container.replaceChildren(empty);
  }

  reset();
  return {
    element: container,
    reset,
    update(state) {
      const processes = Object.values(state?.processes ?? {});
      empty.hidden = processes.some((p) => p.lines?.length);
      for (const process of processes) {
        const entry = boxFor(process);
        entry.name.textContent = `${process.name} · pid ${process.pid}`;
        const { key, text } = describeState(process, state, t);
        entry.box.dataset.state = key;
        entry.status.textContent = text;
        const lines = process.lines ?? [];
        if (lines.length > entry.count) {
          const fragment = document.createDocumentFragment();
          for (const line of lines.slice(entry.count)) {
            const span = document.createElement('span');
            span.className = `line line-${line.stream}`;
            span.textContent = `${line.text}\n`;
            fragment.append(span);
          }
          entry.pre.append(fragment);
          entry.count = lines.length;
        }
      }
    },
    refresh(state) {
      empty.textContent = t('output.empty');
      this.update(state);
    },
    destroy() { container.replaceChildren(); },
  };
}
