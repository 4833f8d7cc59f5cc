// 网络态势: the lists beside the network view — units below ranked by online rate, the
// longest-offline agents, the worst links by loss and RTT, agents joined and withdrawn this
// month, and the open alarms with their 市/县/乡 path and how long each has lasted. Every list
// is computed by the control plane (`board` of /api/v1/network) for the division shown.

import { h } from '../dom.js';
import { t, formatTime } from '../i18n.js';
import { table, duration } from '../ui.js';

function rate(child) {
  return child.total ? child.online / child.total : -1;
}

function percentOf(child) {
  return child.total ? `${((child.online * 100) / child.total).toFixed(1)}%` : '—';
}

export function rtt(link) {
  return link.rtt_ms == null ? '—' : `${link.rtt_ms.toFixed(1)} ms`;
}

export function loss(link) {
  return link.loss_percent == null ? '—' : `${link.loss_percent.toFixed(2)}%`;
}

function badge(state, label) {
  return h('span', { class: `state state-${state}`, dataset: { state } }, label || t(`state.${state}`));
}

function unitCell(unit) {
  return h('td', {}, h('a', { href: `#/network/${unit.division}` }, unit.path || unit.division));
}

function hostCell(unit) {
  return h('td', {}, h('a', { href: `#/assets/${encodeURIComponent(unit.id)}` }, unit.hostname || unit.id));
}

function ranking(data) {
  const ranked = [...data.children].sort((a, b) => (rate(b) - rate(a)) || (b.total - a.total) || a.code.localeCompare(b.code));
  return table({ id: 'board-ranking' }, t('board.ranking', { level: t(`level.${data.division.level + 1}`) }),
    [t('board.rank'), t('overview.division'), t('overview.online_rate'), t('overview.state')],
    data.children.length ? ranked.map((child, index) => h('tr', { dataset: { code: child.code } },
      h('td', {}, String(index + 1)),
      h('th', { scope: 'row' }, h('a', { href: `#/network/${child.code}` }, child.name)),
      h('td', {}, `${percentOf(child)} (${child.online}/${child.total})`),
      h('td', {}, badge(child.state)))) : []);
}

function offline(board) {
  return table({ id: 'board-offline' }, t('board.offline'),
    [t('board.unit'), t('board.host'), t('board.since'), t('board.duration')],
    board.longest_offline.map((unit) => h('tr', { dataset: { agentId: unit.id } },
      unitCell(unit), hostCell(unit), h('td', {}, formatTime(unit.since)), h('td', {}, duration(unit.duration_ms)))));
}

function links(board) {
  return table({ id: 'board-links' }, t('board.links'),
    [t('board.unit'), t('board.host'), t('board.rtt'), t('board.loss'), t('overview.state')],
    board.worst_links.map((unit) => h('tr', { dataset: { agentId: unit.id } },
      unitCell(unit), hostCell(unit), h('td', {}, rtt(unit.link)), h('td', {}, loss(unit.link)),
      h('td', {}, badge(unit.link.state, t(`link.${unit.link.state}`))))));
}

function month(id, caption, units) {
  return table({ id }, `${caption} · ${units.count}`,
    [t('board.unit'), t('board.host'), t('board.at')],
    units.units.map((unit) => h('tr', { dataset: { agentId: unit.id } },
      unitCell(unit), hostCell(unit), h('td', {}, formatTime(unit.since)))));
}

function alarms(board) {
  return h('section', { class: 'alarms', 'aria-labelledby': 'board-alarms-title' },
    h('h3', { id: 'board-alarms-title' }, t('board.alarms', { count: board.alarms_open })),
    h('ol', { id: 'board-alarms', class: 'alarm-list', 'aria-live': 'polite' },
      board.alarms.length ? board.alarms.map((alarm) => h('li', {
        class: `alarm ${alarm.firing ? 'alarm-firing' : 'alarm-clear'}`,
        dataset: { incident: String(alarm.id), division: alarm.division },
      },
      h('span', { class: `severity severity-${alarm.severity}` }, alarm.severity), ' ',
      h('a', { href: `#/orders?division=${alarm.division}` }, alarm.title), ' ',
      h('span', { class: 'muted' }, alarm.path), alarm.hostname ? [' · ', alarm.hostname] : null, ' ',
      h('span', { class: 'alarm-duration' }, t('board.lasting', { duration: duration(alarm.duration_ms) }))))
        : h('li', { class: 'muted' }, t('board.no_alarms'))));
}

/** The board of one network level. */
export function boardView(data) {
  const board = data.board;
  return h('section', { id: 'network-board', class: 'board', 'aria-label': t('board.title') },
    alarms(board),
    ranking(data),
    offline(board),
    links(board),
    month('board-joined', t('board.joined', { month: board.month }), board.joined),
    month('board-withdrawn', t('board.withdrawn', { month: board.month }), board.withdrawn));
}
