// Scenario cards and the parameter form generated from each scenario's parameter schema.

import { fieldErrors, normaliseParam, validateParam } from './params.js';

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

// The field for `param`, holding what `before` (the field it replaces, if any) held.
function inputFor(param, id, before) {
  if (param.type === 'choice') {
    const select = el('select', { id, name: param.name });
    for (const choice of param.choices) select.append(el('option', { value: String(choice) }, String(choice)));
    select.value = before?.value ?? String(param.default ?? param.choices[0]);
    return select;
  }
  if (param.type === 'bool') {
    const box = el('input', { id, name: param.name, type: 'checkbox' });
    box.checked = before?.checked ?? Boolean(param.default);
    return box;
  }
  const numeric = param.type !== 'str';
  const input = el('input', { id, name: param.name, type: numeric ? 'number' : 'text' });
  if (numeric && param.min != null) input.min = String(param.min);
  if (numeric && param.max != null) input.max = String(param.max);
  if (numeric) input.step = param.type === 'int' ? '1' : 'any';
  input.value = before?.value ?? (param.default == null ? '' : String(param.default));
  return input;
}

/**
 * The gallery: root holds [data-gallery-cards] and [data-params-form]. A field's value and its
 * error outlive a redraw (a change of language); onCheck() fires when the errors change.
 */
export function createGallery(root, { i18n, onRun, onSelect, onCheck }) {
  const cards = root.querySelector('[data-gallery-cards]');
  const form = root.querySelector('[data-params-form]');
  const fields = form.querySelector('[data-params-fields]');
  const formError = form.querySelector('[data-form-error]');
  let scenarios = [];
  let selected = null;
  let params = [];
  const errors = new Map(); // field name → { key, vars } to translate, or { text } from the server
  let general = null; // the error above the form, in the same shape
  const say = (error) => (error.key ? i18n.t(error.key, error.vars) : error.text);
  const wrapOf = (name) => fields.querySelector(`[data-field="${CSS.escape(name)}"]`);

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

  // A field whose values run long (eight digits, a choice of eight letters) gets a wider input.
  const wide = (p) => (p.type === 'choice'
    ? Math.max(...p.choices.map((c) => String(c).length)) > 7
    : String(Math.trunc(Math.abs(p.max ?? 0))).length > 7);

  function renderForm() {
    form.hidden = !selected;
    if (!selected) return;
    form.querySelector('[data-params-title]').textContent = i18n.pick(selected.title);
    form.querySelector('[data-params-teaching]').textContent = i18n.pick(selected.teaching);
    fields.replaceChildren(...(params.length ? params.map((p) => {
      const id = `param-${p.name}`;
      const wrap = el('div', { class: `field field-${p.type}${wide(p) ? ' field-wide' : ''}`,
        'data-field': p.name });
      const input = inputFor(p, id, wrapOf(p.name)?.querySelector('input, select'));
      const label = el('label', { for: id }, i18n.pick(p.label));
      const help = el('small', { class: 'field-help', id: `${id}-help` }, i18n.pick(p.help));
      const error = el('small', { class: 'field-error', id: `${id}-error`, role: 'alert' });
      input.setAttribute('aria-describedby', `${id}-help ${id}-error`);
      input.addEventListener('change', () => check(p, wrap));
      // Clearing unreadable text from a number field changes no value, so no 'change' comes.
      input.addEventListener('blur', () => check(p, wrap));
      wrap.append(label, input, help, error);
      setFieldError(wrap, errors.get(p.name) ?? null);
      return wrap;
    }) : [el('p', { class: 'muted' }, i18n.t('gallery.noParams'))]));
    showGeneral(general);
  }

  function check(param, wrap) {
    const input = wrap.querySelector('input, select');
    // A number field shows text it cannot read as a number ("1e", "--") but its value is "".
    const result = input.validity?.badInput ? { error: 'form.unreadable', vars: {} }
      : validateParam(param, param.type === 'bool' ? input.checked : input.value);
    setFieldError(wrap, result.error ? { key: result.error, vars: result.vars } : null);
    return result;
  }

  function setFieldError(wrap, error) {
    const had = errors.has(wrap.dataset.field);
    if (error) errors.set(wrap.dataset.field, error); else errors.delete(wrap.dataset.field);
    wrap.classList.toggle('invalid', Boolean(error));
    wrap.querySelector('input, select')?.setAttribute('aria-invalid', String(Boolean(error)));
    wrap.querySelector('.field-error').textContent = error ? say(error) : '';
    if (had !== Boolean(error)) onCheck?.();
  }

  function showGeneral(error) {
    general = error;
    formError.hidden = !error;
    formError.textContent = error ? say(error) : '';
  }

  // The first field to fix, scrolled into view inside the form's own scrolling box, and focused.
  function focusFirstError() {
    const wrap = fields.querySelector('.field.invalid');
    wrap?.scrollIntoView({ block: 'nearest' });
    wrap?.querySelector('input, select')?.focus({ preventScroll: true });
  }

  function select(id) {
    const next = scenarios.find((s) => s.id === id) ?? null;
    if (next !== selected) {
      selected = next;
      params = (selected?.params ?? []).map(normaliseParam);
      fields.replaceChildren();
      errors.clear();
      general = null;
      onCheck?.();
    }
    renderCards();
    renderForm();
    // The form takes the height it needs from the list: keep the picked card in view.
    cards.querySelector('[aria-current="true"]')?.scrollIntoView({ block: 'nearest' });
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
    /** The labels of the fields that show an error, in the form's order. */
    get invalidFields() {
      return params.filter((p) => errors.has(p.name)).map((p) => i18n.pick(p.label));
    },
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
        const result = check(p, wrapOf(p.name));
        if (result.error) ok = false; else values[p.name] = result.value;
      }
      showGeneral(ok ? null : { key: 'form.invalid' });
      if (!ok) {
        focusFirstError();
        return null;
      }
      const startMethod = form.querySelector('[data-start-method]').value;
      return { scenario: selected.id, params: values, start_method: startMethod };
    },
    /** Show a server refusal (422 detail) at its field, or above the form. */
    showServerError(detail) {
      const elsewhere = []; // messages for no field of the form
      for (const [name, message] of Object.entries(fieldErrors(detail))) {
        const wrap = name && wrapOf(name);
        if (wrap) setFieldError(wrap, { text: message }); else elsewhere.push(name ? `${name}: ${message}` : message);
      }
      showGeneral(elsewhere.length ? { text: elsewhere.join(' ') } : null);
      focusFirstError();
    },
  };
}
