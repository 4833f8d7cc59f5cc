// 工单: the list with filters (state, division, closed ones too), and one order's detail with
// its transition timeline and the actions ack / start / resolve (feedback required). What a
// user may do is the API's decision: a refusal (403 for a role without the permission, 409
// for a transition the state does not allow) is shown as the API worded it.

import { h, replace } from '../dom.js';
import { t, formatTime } from '../i18n.js';
import { get, post } from '../api.js';

const STATES = ['DETECTED', 'DISPATCHED', 'ACKED', 'IN_PROGRESS', 'RESOLVED', 'VERIFIED', 'CLOSED',
  'SUPPRESSED', 'RETURNED', 'REOPENED', 'AUTO_RESOLVED'];
const REFRESH_MS = 5000;

/** Filters survive a visit to a detail page. */
const filters = { state: '', division: '', all: false };

export function stateBadge(state) {
  return h('span', { class: `wo-state wo-${state}`, dataset: { state } }, t(`wo.${state}`), ' ',
    h('span', { class: 'code' }, state));
}

function listPath() {
  const query = new URLSearchParams();
  if (filters.state) query.set('state', filters.state);
  if (filters.division) query.set('division', filters.division);
  if (filters.all || filters.state) query.set('all', 'true');
  const text = query.toString();
  return text ? `/api/v1/work-orders?${text}` : '/api/v1/work-orders';
}

function renderList(main, context) {
  const error = h('p', { class: 'error', role: 'alert' });
  const body = h('div', { id: 'orders-body' }, h('p', {}, t('common.loading')));
  const state = h('select', { id: 'filter-state', name: 'state' },
    h('option', { value: '' }, t('orders.state.open')),
    STATES.map((name) => h('option', { value: name }, `${t(`wo.${name}`)} (${name})`)));
  state.value = filters.state;
  const division = h('input', {
    id: 'filter-division', name: 'division', inputmode: 'numeric', pattern: '[0-9]*', value: filters.division,
  });
  const all = h('input', { id: 'filter-all', name: 'all', type: 'checkbox' });
  all.checked = filters.all;
  let stopped = false;
  async function load() {
    try {
      const rows = await get(listPath());
      if (stopped) return;
      error.textContent = '';
      rows.sort((a, b) => b.created_at - a.created_at);
      replace(body, rows.length ? h('table', { id: 'orders-table' },
        h('caption', { class: 'visually-hidden' }, t('orders.title')),
        h('thead', {}, h('tr', {}, [t('orders.id'), t('orders.severity'), t('orders.state'), t('orders.title_col'),
          t('orders.division_col'), t('orders.team'), t('orders.created'), t('orders.escalation')]
          .map((label) => h('th', { scope: 'col' }, label)))),
        h('tbody', {}, rows.map((row) => h('tr', { dataset: { orderId: row.id, state: row.state } },
          h('th', { scope: 'row' }, h('a', { href: `#/orders/${encodeURIComponent(row.id)}` }, row.id)),
          h('td', {}, h('span', { class: `severity severity-${row.severity}` }, row.severity)),
          h('td', {}, stateBadge(row.state)),
          h('td', {}, row.title),
          h('td', {}, row.division_path),
          h('td', {}, row.team || '—'),
          h('td', {}, formatTime(row.created_at)),
          h('td', {}, row.escalation_level ? String(row.escalation_level) : '—')))))
        : h('p', { id: 'orders-empty', class: 'muted' }, t('orders.empty')));
    } catch (problem) {
      if (!stopped) error.textContent = context.describeError(problem);
    }
  }
  const form = h('form', {
    class: 'filters', 'aria-label': t('orders.filters'),
    onsubmit: (event) => {
      event.preventDefault();
      filters.state = state.value;
      filters.division = division.value.trim();
      filters.all = all.checked;
      load();
    },
  },
  h('label', { for: 'filter-state' }, t('orders.state')), state,
  h('label', { for: 'filter-division' }, t('orders.division')), division,
  h('label', { class: 'check' }, all, t('orders.all')),
  h('button', { type: 'submit', id: 'filter-apply' }, t('orders.apply')));
  replace(main, h('h1', {}, t('orders.title')), form, error, body);
  load();
  const timer = setInterval(load, REFRESH_MS);
  let pending = null;
  const unsubscribe = context.onEvent((event) => {
    if (event.name !== 'work_order' && event.name !== 'lagged') return;
    clearTimeout(pending);
    pending = setTimeout(load, 200);
  });
  return () => {
    stopped = true;
    clearInterval(timer);
    clearTimeout(pending);
    unsubscribe();
  };
}

function renderDetail(main, context, id) {
  const error = h('p', { id: 'action-error', class: 'error', role: 'alert' });
  const notice = h('p', { id: 'action-notice', class: 'notice', role: 'status' });
  const body = h('div', { id: 'order-body' }, h('p', {}, t('common.loading')));
  const feedback = h('textarea', { id: 'feedback', name: 'feedback', rows: 3 });
  let stopped = false;
  let busy = false;
  async function act(command, label) {
    if (busy) return;
    error.textContent = '';
    notice.textContent = '';
    const request = { command };
    if (command === 'resolve') {
      if (!feedback.value.trim()) {
        error.textContent = t('orders.feedback.required');
        feedback.focus();
        return;
      }
      request.feedback = feedback.value.trim();
    }
    busy = true;
    try {
      const detail = await post(`/api/v1/work-orders/${encodeURIComponent(id)}/actions`, request);
      notice.textContent = t('orders.done', { action: label });
      if (command === 'resolve') feedback.value = '';
      show(detail);
    } catch (problem) {
      error.textContent = context.describeError(problem);
    } finally {
      busy = false;
    }
  }
  const actions = h('section', { class: 'panel', 'aria-labelledby': 'actions-title' },
    h('h2', { id: 'actions-title' }, t('orders.actions')),
    h('div', { class: 'buttons' },
      h('button', { type: 'button', id: 'action-ack', onclick: () => act('ack', t('orders.ack')) }, t('orders.ack')),
      h('button', { type: 'button', id: 'action-start', onclick: () => act('start', t('orders.start')) }, t('orders.start'))),
    h('label', { for: 'feedback' }, t('orders.feedback')), feedback,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', id: 'action-resolve', class: 'primary', onclick: () => act('resolve', t('orders.resolve')) },
        t('orders.resolve'))),
    notice, error);
  function show(detail) {
    const row = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
    replace(body,
      h('dl', { class: 'facts' },
        row(t('orders.state'), h('span', { id: 'order-state', dataset: { state: detail.state } }, stateBadge(detail.state))),
        row(t('orders.severity'), detail.severity),
        row(t('orders.category'), t(`category.${detail.category}`)),
        row(t('orders.title_col'), detail.title),
        row(t('orders.division_col'), detail.division_path),
        row(t('orders.team'), detail.team || '—'),
        row(t('orders.created'), formatTime(detail.created_at)),
        row(t('orders.ack_due'), formatTime(detail.ack_due_ms)),
        row(t('orders.handle_due'), formatTime(detail.handle_due_ms)),
        row(t('orders.escalation'), String(detail.escalation_level)),
        row(t('orders.supervisors'), detail.supervisors.length ? detail.supervisors.join(', ') : '—')),
      h('section', { 'aria-labelledby': 'timeline-title' },
        h('h2', { id: 'timeline-title' }, t('orders.timeline')),
        h('ol', { id: 'timeline', class: 'timeline' }, detail.transitions.map((step) => h('li', { dataset: { to: step.to } },
          h('time', {}, formatTime(step.at)), ' ',
          h('strong', {}, step.from === step.to ? t(`wo.${step.to}`) : `${t(`wo.${step.from}`)} → ${t(`wo.${step.to}`)}`),
          ` · ${t(`cmd.${step.command}`)} · ${t('orders.by', { actor: step.actor })}`,
          step.detail ? h('div', { class: 'muted' }, step.detail) : null)))));
  }
  async function load() {
    try {
      const detail = await get(`/api/v1/work-orders/${encodeURIComponent(id)}`);
      if (!stopped && !busy) show(detail);
    } catch (problem) {
      if (!stopped) error.textContent = context.describeError(problem);
    }
  }
  replace(main, h('p', {}, h('a', { href: '#/orders', id: 'back-to-orders' }, t('orders.back'))),
    h('h1', {}, t('orders.detail', { id })), h('div', { class: 'order-detail' }, body, actions));
  load();
  let pending = null;
  const unsubscribe = context.onEvent((event) => {
    if (event.name !== 'work_order' || (event.data && event.data.id !== id)) return;
    clearTimeout(pending);
    pending = setTimeout(load, 200);
  });
  const timer = setInterval(load, REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
    clearTimeout(pending);
    unsubscribe();
  };
}

/** `#/orders`, `#/orders?division=CODE` (from the network view), `#/orders/ID`. */
export function render(main, context, id, params) {
  if (id) return renderDetail(main, context, id);
  if (params && params.has('division')) {
    filters.division = params.get('division');
    filters.state = '';
  }
  return renderList(main, context);
}
