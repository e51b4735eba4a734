// Scenario cards and the parameter form generated from each scenario's parameter schema.

const NUMERIC = { int: 'int', integer: 'int', float: 'float', number: 'float' };

/** Normalise a schema entry: tolerate {en,zh} or plain-string labels and a few type spellings. */
export function normaliseParam(raw) {
  const type = String(raw.type ?? 'str').toLowerCase();
  const choices = raw.choices ?? raw.options ?? raw.enum ?? null;
  return {
    name: raw.name ?? raw.id,
    type: choices ? 'choice' : (NUMERIC[type] ?? (type.startsWith('bool') ? 'bool' : 'str')),
    default: raw.default,
    min: raw.min ?? raw.minimum ?? null,
    max: raw.max ?? raw.maximum ?? null,
    choices,
    label: raw.label ?? raw.title ?? raw.name ?? raw.id,
    help: raw.help ?? raw.description ?? '',
  };
}

/** Check one raw form value; returns {value} or {error: i18n key, vars}. */
export function validateParam(param, raw) {
  if (param.type === 'bool') return { value: Boolean(raw) };
  const text = String(raw ?? '').trim();
  if (text === '') return { error: 'form.required', vars: {} };
  if (param.type === 'choice') {
    const found = param.choices.find((c) => String(c) === text);
    if (found === undefined) return { error: 'form.choice', vars: { value: text, choices: param.choices.join(', ') } };
    return { value: found };
  }
  if (param.type === 'str') return { value: text };
  const value = Number(text);
  if (!Number.isFinite(value)) return { error: 'form.number', vars: { value: text } };
  if (param.type === 'int' && !Number.isInteger(value)) return { error: 'form.integer', vars: { value: text } };
  if (param.min != null && value < param.min) return { error: 'form.min', vars: { min: param.min, value } };
  if (param.max != null && value > param.max) return { error: 'form.max', vars: { max: param.max, value } };
  return { value };
}

/** Read a 422 `detail` as {field: message}: "params.<field>: text", {field, message} or a list. */
export function fieldErrors(detail) {
  if (Array.isArray(detail)) {
    return Object.fromEntries(detail.map((d) => [String(d.loc?.at(-1) ?? ''), d.msg ?? String(d)]));
  }
  if (detail && typeof detail === 'object') return { [detail.field ?? '']: detail.message ?? JSON.stringify(detail) };
  const match = /^params\.([\w-]+): (.*)$/s.exec(String(detail ?? ''));
  return match ? { [match[1]]: match[2] } : { '': String(detail ?? '') };
}

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function inputFor(param, id) {
  if (param.type === 'choice') {
    const select = el('select', { id, name: param.name });
    for (const choice of param.choices) select.append(el('option', { value: String(choice) }, String(choice)));
    select.value = String(param.default ?? param.choices[0]);
    return select;
  }
  if (param.type === 'bool') {
    const box = el('input', { id, name: param.name, type: 'checkbox' });
    box.checked = Boolean(param.default);
    return box;
  }
  const numeric = param.type !== 'str';
  const input = el('input', { id, name: param.name, type: numeric ? 'number' : 'text' });
  if (numeric && param.min != null) input.min = String(param.min);
  if (numeric && param.max != null) input.max = String(param.max);
  if (numeric) input.step = param.type === 'int' ? '1' : 'any';
  input.value = param.default == null ? '' : String(param.default);
  return input;
}

/** The gallery: root holds [data-gallery-cards] and [data-params-form]. */
export function createGallery(root, { i18n, onRun, onSelect }) {
  const cards = root.querySelector('[data-gallery-cards]');
  const form = root.querySelector('[data-params-form]');
  const fields = form.querySelector('[data-params-fields]');
  const formError = form.querySelector('[data-form-error]');
  let scenarios = [];
  let selected = null;
  let params = [];

  function renderCards() {
    cards.replaceChildren(...scenarios.map((s) => {
      const item = el('li', { class: 'card', 'data-scenario': s.id, 'aria-current': String(s.id === selected?.id) });
      const pick = el('button', { type: 'button', class: 'card-pick', 'data-pick': s.id });
      pick.append(el('span', { class: 'card-title' }, i18n.pick(s.title)),
        el('span', { class: 'card-teaching' }, i18n.pick(s.teaching)));
      const run = el('button', { type: 'button', class: 'btn btn-run card-run', 'data-run-scenario': s.id }, i18n.t('gallery.run'));
      run.setAttribute('aria-label', `${i18n.t('gallery.run')}: ${i18n.pick(s.title)}`);
      item.append(pick, run);
      return item;
    }));
  }

  function renderForm() {
    form.hidden = !selected;
    if (!selected) return;
    form.querySelector('[data-params-title]').textContent = i18n.pick(selected.title);
    form.querySelector('[data-params-teaching]').textContent = i18n.pick(selected.teaching);
    const old = new FormData(form);
    fields.replaceChildren(...(params.length ? params.map((p) => {
      const id = `param-${p.name}`;
      const wrap = el('div', { class: `field field-${p.type}`, 'data-field': p.name });
      const input = inputFor(p, id);
      if (old.has(p.name) && p.type !== 'bool') input.value = old.get(p.name);
      const label = el('label', { for: id }, i18n.pick(p.label));
      const help = el('small', { class: 'field-help', id: `${id}-help` }, i18n.pick(p.help));
      const error = el('small', { class: 'field-error', id: `${id}-error`, role: 'alert' });
      input.setAttribute('aria-describedby', `${id}-help ${id}-error`);
      input.addEventListener('change', () => check(p, wrap));
      wrap.append(label, input, help, error);
      return wrap;
    }) : [el('p', { class: 'muted' }, i18n.t('gallery.noParams'))]));
  }

  function check(param, wrap) {
    const input = wrap.querySelector('input, select');
    const result = validateParam(param, param.type === 'bool' ? input.checked : input.value);
    showFieldError(wrap, result.error ? i18n.t(result.error, result.vars) : '');
    return result;
  }

  function showFieldError(wrap, message) {
    wrap.classList.toggle('invalid', Boolean(message));
    wrap.querySelector('input, select')?.setAttribute('aria-invalid', String(Boolean(message)));
    wrap.querySelector('.field-error').textContent = message;
  }

  function select(id) {
    const next = scenarios.find((s) => s.id === id) ?? null;
    if (next !== selected) {
      selected = next;
      params = (selected?.params ?? []).map(normaliseParam);
      fields.replaceChildren();
      formError.hidden = true;
    }
    renderCards();
    renderForm();
    onSelect?.(selected);
  }

  cards.addEventListener('click', (event) => {
    const pick = event.target.closest('[data-pick]');
    const run = event.target.closest('[data-run-scenario]');
    if (pick) select(pick.dataset.pick);
    if (run) {
      select(run.dataset.runScenario);
      onRun?.();
    }
  });
  form.addEventListener('submit', (event) => { event.preventDefault(); onRun?.(); });

  return {
    element: root,
    get selected() { return selected; },
    find: (id) => scenarios.find((s) => s.id === id) ?? null,
    setScenarios(list) { scenarios = list; select(selected?.id ?? list[0]?.id); },
    setError(message) { cards.replaceChildren(el('li', { class: 'cards-empty error' }, message)); },
    select,
    refresh() { if (scenarios.length) { renderCards(); renderForm(); } },
    /** The run request for the selected scenario, or null (with messages shown) when invalid. */
    spec() {
      if (!selected) return null;
      const values = {};
      let ok = true;
      for (const p of params) {
        const result = check(p, fields.querySelector(`[data-field="${CSS.escape(p.name)}"]`));
        if (result.error) ok = false; else values[p.name] = result.value;
      }
      formError.hidden = ok;
      formError.textContent = ok ? '' : i18n.t('form.invalid');
      if (!ok) return null;
      return {
        scenario: selected.id,
        params: values,
        start_method: form.querySelector('[data-start-method]').value,
      };
    },
    /** Show a server refusal (422 detail) at its field, or above the form. */
    showServerError(detail) {
      const byField = fieldErrors(detail);
      const general = [];
      for (const [name, message] of Object.entries(byField)) {
        const wrap = name && fields.querySelector(`[data-field="${CSS.escape(name)}"]`);
        if (wrap) showFieldError(wrap, message); else general.push(name ? `${name}: ${message}` : message);
      }
      formError.hidden = general.length === 0;
      formError.textContent = general.join(' ');
    },
  };
}
