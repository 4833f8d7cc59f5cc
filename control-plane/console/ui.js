// Pieces the pages share: tables with a caption, a titled section, numbers and durations as
// the console shows them, and a CSV file the browser downloads.

import { h } from './dom.js';
import { t } from './i18n.js';

/** A table; `rows` are `<tr>` elements (an empty list shows one "none" row). */
export function table(attributes, caption, headers, rows) {
  const body = rows.length ? rows
    : h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, t('common.none')));
  return h('table', attributes || {},
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, headers.map((header) => h('th', { scope: 'col' }, header)))),
    h('tbody', {}, body));
}

/** A section with its heading (`id` names the heading, for `aria-labelledby`). */
export function section(id, title, ...children) {
  return h('section', { class: 'panel', 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

/** `12.3%`, or `—` when the API had nothing to count. */
export function percent(value) {
  return value === null || value === undefined ? '—' : `${Number(value).toFixed(2)}%`;
}

/** Milliseconds as `3h 20m`, `45s`; `—` for none. */
export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  const seconds = Math.round(Math.abs(ms) / 1000);
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const parts = [];
  if (days) parts.push(t('unit.days', { n: days }));
  if (hours) parts.push(t('unit.hours', { n: hours }));
  if (minutes && !days) parts.push(t('unit.minutes', { n: minutes }));
  if (!parts.length) parts.push(t('unit.seconds', { n: seconds % 60 }));
  return parts.join(' ');
}

/** Bytes as `1.5 GiB`. */
export function bytes(value) {
  if (!value) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

/** A badge for online / offline. */
export function onlineBadge(online) {
  return h('span', { class: `state state-${online ? 'ok' : 'down'}`, dataset: { online: String(online) } },
    t(online ? 'common.online' : 'common.offline'));
}

/** A severity (`critical`, `high`, `medium`, `low`) with its colour and its name. */
export function severityBadge(severity) {
  return h('span', { class: `sev sev-${severity}`, dataset: { severity } }, t(`severity.${severity}`) || severity);
}

/** One CSV field: quoted when it holds a quote, a separator or a line break (RFC 4180). */
export function csvField(value) {
  const text = value === null || value === undefined ? '' : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** CSV text (CRLF line ends) from a header and rows of values. */
export function csv(header, rows) {
  return [header, ...rows].map((row) => row.map(csvField).join(',')).join('\r\n') + '\r\n';
}

/**
 * Downloads `text` as a UTF-8 file with a byte-order mark, so that Excel opens Chinese
 * correctly.
 */
export function download(name, text, type) {
  const blob = new Blob(['\uFEFF', text], { type: type || 'text/csv;charset=utf-8' });
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: name, class: 'visually-hidden' });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** The current month in China time, `YYYY-MM`. */
export function currentMonth() {
  const now = new Date(Date.now() + 8 * 3600 * 1000);
  return `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
}
