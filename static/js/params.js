// A scenario's parameters, pure: their schema read leniently, a form value checked, a 422 read.

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
