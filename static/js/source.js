// The scenario's source with the line of the latest traced call lit (dimmed once its process
// has exited).

/** Split a `site` ("path/file.py:12") into its file and line number (null if malformed). */
export function parseSite(site) {
  const match = /^(.*):(\d+)$/.exec(String(site ?? ''));
  return match ? { file: match[1], line: Number(match[2]) } : null;
}

function basename(path) {
  return String(path).split(/[\\/]/).pop();
}

/** The source panel: update(scenario, state) redraws only when the scenario or lit line changes. */
export function createSourcePanel(container, { t }) {
  const caption = document.createElement('p');
  caption.className = 'source-caption';
  caption.setAttribute('aria-live', 'polite');
  const list = document.createElement('ol');
  list.className = 'source-lines';
  container.replaceChildren(caption, list);
  let shownId;
  let lines = [];
  let lit = null;
  let sourceFile = null;
  // Where each line sits and how much of the panel shows, measured once per source: reading
  // layout on every lit line forced the browser to lay the page out several times a second.
  let offsets = null;
  let view = null; // {top, height} of the scrolling box
  const box = () => container.parentElement ?? container;
  box().addEventListener('scroll', () => { if (view) view.top = box().scrollTop; });
  // Long lines wrap, so where a line sits depends on the panel's width: measure again after.
  const resized = new ResizeObserver(() => { view = null; });
  resized.observe(box());

  function showSource(scenario) {
    shownId = scenario?.id ?? null;
    sourceFile = scenario?.file ?? scenario?.source_file ?? null;
    lit = null;
    offsets = null;
    view = null;
    const text = scenario?.source ?? '';
    lines = text ? text.replace(/\n$/, '').split('\n').map((line, i) => {
      const li = document.createElement('li');
      li.dataset.line = String(i + 1);
      const code = document.createElement('code');
      code.textContent = line || ' ';
      // A long line wraps, its rest indented under its start (see .source-lines code).
      code.style.setProperty('--indent', String(/^ */.exec(line)[0].length));
      li.append(code);
      return li;
    }) : [];
    list.replaceChildren(...lines);
    caption.textContent = text ? '' : t('source.empty');
  }

  function light(call, state) {
    const site = parseSite(call?.site);
    const sameFile = site && (!sourceFile || basename(site.file) === basename(sourceFile));
    const index = sameFile ? site.line - 1 : -1;
    const next = lines[index] ?? null;
    if (next !== lit) {
      lit?.classList.remove('current', 'exited');
      next?.classList.add('current');
      lit = next;
      if (next && !view && box().clientHeight > 0) {
        // Measured only when the panel shows: a hidden one has no layout.
        offsets = lines.map((li) => li.offsetTop);
        view = { top: box().scrollTop, height: box().clientHeight };
      }
      if (next && view) {
        // Keep the lit line in view inside the panel without scrolling the whole page.
        const at = offsets[index];
        if (at < view.top || at > view.top + view.height - 24) {
          view.top = Math.max(0, at - view.height / 3);
          box().scrollTop = view.top;
        }
      }
    }
    let words = caption.textContent;
    const proc = next ? state?.processes?.[call.pid] : null;
    next?.classList.toggle('exited', Boolean(proc?.exited));
    if (next) {
      const vars = { process: proc?.name ?? `pid ${call.pid}`, line: site.line };
      words = t(proc?.exited ? 'source.exited' : 'source.current', vars);
    } else if (lines.length) {
      words = '';
    }
    if (caption.textContent !== words) caption.textContent = words;
    container.dataset.litLine = next ? String(site.line) : '';
  }

  return {
    element: container,
    update(scenario, state) {
      if ((scenario?.id ?? null) !== shownId) showSource(scenario);
      light(state?.lastCall ?? null, state);
    },
    refresh(scenario, state) {
      shownId = undefined;
      this.update(scenario, state);
    },
    destroy() {
      resized.disconnect();
      container.replaceChildren();
    },
  };
}
