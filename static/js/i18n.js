// Labels in English and 中文; scenario texts arrive from the API in both languages.

import { RECORDS_MESSAGES } from './i18n_records.js';
import { RUN_MESSAGES } from './i18n_run.js';
import { STATS_MESSAGES } from './i18n_stats.js';
import { MESSAGES as PAGE_MESSAGES } from './i18n_text.js';
import { VERDICT_MESSAGES } from './i18n_verdicts.js';
import { LIVEVIEW_TEXT_ZH, fill } from './liveview_text.js';

const MESSAGES = Object.fromEntries(Object.entries(PAGE_MESSAGES)
  .map(([lang, texts]) => [lang,
    { ...texts, ...RECORDS_MESSAGES[lang], ...RUN_MESSAGES[lang], ...VERDICT_MESSAGES[lang],
      ...STATS_MESSAGES[lang] }]));
Object.assign(MESSAGES.zh, LIVEVIEW_TEXT_ZH); // English ones are the live view's defaults

export const LANGUAGES = ['en', 'zh'];

/** Pick the starting language: a saved choice, else the browser's. */
export function preferredLanguage(saved, browserLanguage) {
  if (LANGUAGES.includes(saved)) return saved;
  return String(browserLanguage || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

const SAVED = 'pipescope.lang';

/** The page's language: an explicit ?lang= wins, then the visitor's last choice, then the server's. */
export function pageLanguage(location, negotiated) {
  let saved = null;
  try { saved = localStorage.getItem(SAVED); } catch { /* storage refused: nothing saved */ }
  return preferredLanguage(new URLSearchParams(location.search).get('lang') ?? saved, negotiated);
}

/** Keep the visitor's choice for the next visit (not kept in private mode). */
export function rememberLanguage(lang) {
  try { localStorage.setItem(SAVED, lang); } catch { /* private mode: not kept */ }
}

/** A translator whose language can change; listeners hear every change. */
export function createI18n(lang = 'en') {
  const listeners = new Set();
  let current = LANGUAGES.includes(lang) ? lang : 'en';
  const t = (key, vars = {}) => {
    return fill(MESSAGES[current][key] ?? MESSAGES.en[key] ?? key, vars);
  };
  // Scenario texts are {en, zh} objects (or plain strings) from the API.
  const pick = (texts) => {
    if (texts == null) return '';
    if (typeof texts === 'string') return texts;
    return texts[current] ?? texts.en ?? Object.values(texts)[0] ?? '';
  };
  return {
    t,
    pick,
    get lang() { return current; },
    setLang(next) {
      if (!LANGUAGES.includes(next) || next === current) return;
      current = next;
      for (const listener of listeners) listener(current);
    },
    onChange(listener) { listeners.add(listener); return () => listeners.delete(listener); },
  };
}

/** Fill every [data-i18n] element (and -title, -aria-label, -placeholder) under root. */
export function translateTree(root, t) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll('[data-i18n-aria-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nAriaLabel));
  }
}
