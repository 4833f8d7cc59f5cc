// The language of the console: Chinese first, English on request, kept in localStorage.
// Every visible string is a key of ./i18n/zh.js and ./i18n/en.js.

import zh from './i18n/zh.js';
import en from './i18n/en.js';

const TABLES = { zh, en };
const STORAGE_KEY = 'bagui.lang';

let current = localStorage.getItem(STORAGE_KEY) === 'en' ? 'en' : 'zh';

export function language() {
  return current;
}

export function setLanguage(language) {
  current = language === 'en' ? 'en' : 'zh';
  localStorage.setItem(STORAGE_KEY, current);
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
}

/** The string `key` in the current language, `{name}` replaced from `params`. */
export function t(key, params) {
  const text = TABLES[current][key] ?? TABLES.zh[key] ?? key;
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : ''));
}

/** A date and time (milliseconds or RFC 3339) in the current language, China time. */
export function formatTime(value) {
  if (value === null || value === undefined || value === '') return '—';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(current === 'zh' ? 'zh-CN' : 'en-GB', {
    timeZone: 'Asia/Shanghai',
    hour12: false,
  });
}

setLanguage(current);
