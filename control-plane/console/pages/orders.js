// 工单: the list with filters (state, division, closed ones too), and one order's detail with
// its transition timeline, SLA clocks (time left to acknowledge and to handle, or how late),
// the escalation chain (督办), and the actions ack / start / resolve (feedback required) /
// verify (accept or reject) / escalate / take over (接管) / reassign (转派) to a team. A role
// without act_on_work_orders is not offered the actions; what a user may do is still the
// API's decision: a refusal (403, or 409 for a transition the state does not allow) is shown
// as the API worded it.

import { h, replace } from '../dom.js';
import { t, formatTime } from '../i18n.js';
import { get, post, may } from '../api.js';
import { duration } from '../ui.js';

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

/** An SLA clock: time left before `due`, or how late, or met (`done` is when it was met). */
function slaClock(id, due, done) {
  if (!due) return h('span', { id, class: 'muted' }, '—');
  if (done) {
    const met = done <= due;
    return h('span', { id, class: `sla sla-${met ? 'met' : 'missed'}`, dataset: { sla: met ? 'met' : 'missed' } },
      formatTime(due), ' · ', t(met ? 'orders.sla.met' : 'orders.sla.missed_by', { time: duration(done - due) }));
  }
  const left = due - Date.now();
  const state = left < 0 ? 'overdue' : left < 15 * 60 * 1000 ? 'soon' : 'running';
  return h('span', { id, class: `sla sla-${state}`, dataset: { sla: state, due: String(due) } },
    formatTime(due), ' · ', left < 0 ? t('orders.sla.overdue', { time: duration(-left) }) : t('orders.sla.left', { time: duration(left) }));
}

function renderDetail(main, context, id) {
  const error = h('p', { id: 'action-error', class: 'error', role: 'alert' });
  const notice = h('p', { id: 'action-notice', class: 'notice', role: 'status' });
  const body = h('div', { id: 'order-body' }, h('p', {}, t('common.loading')));
  const feedback = h('textarea', { id: 'feedback', name: 'feedback', rows: 3 });
  const team = h('select', { id: 'action-team', name: 'team' }, h('option', { value: '' }, t('orders.team.choose')));
  let stopped = false;
  let busy = false;
  let current = null;
  async function act(command, label, extra) {
    if (busy) return;
    error.textContent = '';
    notice.textContent = '';
    const request = { command, ...(extra || {}) };
    if (command === 'resolve') {
      if (!feedback.value.trim()) {
        error.textContent = t('orders.feedback.required');
        feedback.focus();
        return;
      }
      request.feedback = feedback.value.trim();
    }
    if (['escalate', 'take_over', 'reassign'].includes(command)) {
      if (!team.value) {
        error.textContent = t('orders.team.required');
        team.focus();
        return;
      }
      request.team = team.value;
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
  const button = (command, key, extra, attributes) => h('button', {
    type: 'button', id: `action-${command.replace('_', '-')}${extra && extra.accepted === false ? '-reject' : ''}`,
    onclick: () => act(command, t(key), extra), ...(attributes || {}),
  }, t(key));
  const actions = may('act_on_work_orders') ? h('section', { class: 'panel', 'aria-labelledby': 'actions-title' },
    h('h2', { id: 'actions-title' }, t('orders.actions')),
    h('div', { class: 'buttons' }, button('ack', 'orders.ack'), button('start', 'orders.start')),
    h('label', { for: 'feedback' }, t('orders.feedback')), feedback,
    h('div', { class: 'buttons' },
      button('resolve', 'orders.resolve', null, { class: 'primary' }),
      button('verify', 'orders.verify', { accepted: true }),
      button('verify', 'orders.reject', { accepted: false })),
    h('h3', {}, t('orders.supervision')),
    h('label', { for: 'action-team' }, t('orders.team.target')), team,
    h('div', { class: 'buttons' },
      button('escalate', 'orders.escalate'), button('take_over', 'orders.take_over'), button('reassign', 'orders.reassign')),
    notice, error)
    : h('section', { class: 'panel', 'aria-labelledby': 'actions-title' },
      h('h2', { id: 'actions-title' }, t('orders.actions')),
      h('p', { id: 'actions-denied', class: 'muted' }, t('orders.actions.denied')), notice, error);
  function show(detail) {
    current = detail;
    const order = detail.order || {};
    const row = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
    const supervisors = [...(order.supervisors || [])].sort((a, b) => a.level - b.level);
    replace(body,
      h('dl', { class: 'facts' },
        row(t('orders.state'), h('span', { id: 'order-state', dataset: { state: detail.state } }, stateBadge(detail.state))),
        row(t('orders.severity'), detail.severity),
        row(t('orders.category'), t(`category.${detail.category}`)),
        row(t('orders.title_col'), detail.title),
        row(t('orders.division_col'), detail.division_path),
        row(t('orders.team'), detail.team || '—'),
        row(t('orders.created'), formatTime(detail.created_at)),
        row(t('orders.ack_due'), slaClock('sla-ack', detail.ack_due_ms, order.first_acked_ms)),
        row(t('orders.handle_due'), slaClock('sla-handle', detail.handle_due_ms, order.first_resolved_ms)),
        order.feedback ? row(t('orders.feedback.given'), order.feedback) : null,
        order.reopen_count ? row(t('orders.reopened'), String(order.reopen_count)) : null),
      h('section', { 'aria-labelledby': 'escalation-title' },
        h('h2', { id: 'escalation-title' }, t('orders.escalation_chain')),
        supervisors.length
          ? h('ol', { id: 'escalation-chain', class: 'chain' },
            h('li', {}, t('orders.chain.owner', { team: detail.team || '—' })),
            supervisors.map((supervisor) => h('li', { dataset: { team: supervisor.team, level: String(supervisor.level) } },
              t('orders.chain.level', { level: supervisor.level, team: supervisor.team }))))
          : h('p', { id: 'escalation-chain', class: 'muted' }, t('orders.chain.none'))),
      h('section', { 'aria-labelledby': 'timeline-title' },
        h('h2', { id: 'timeline-title' }, t('orders.timeline')),
        h('ol', { id: 'timeline', class: 'timeline' }, detail.transitions.map((step) => h('li', { dataset: { to: step.to, command: step.command } },
          h('time', {}, formatTime(step.at)), ' ',
          h('strong', {}, step.from === step.to ? t(`wo.${step.to}`) : `${t(`wo.${step.from}`)} → ${t(`wo.${step.to}`)}`),
          ` · ${t(`cmd.${step.command}`)} · ${t('orders.by', { actor: step.actor })}`,
          step.team ? ` · ${t('orders.team')}: ${step.team}` : '',
          step.escalated_to ? ` · ${t('orders.escalated_to', { team: step.escalated_to })}` : '',
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
  async function loadTeams() {
    if (!may('act_on_work_orders')) return;
    try {
      const teams = await get('/api/v1/teams');
      if (stopped) return;
      teams.sort((a, b) => a.division.localeCompare(b.division) || a.id.localeCompare(b.id));
      replace(team, h('option', { value: '' }, t('orders.team.choose')),
        teams.map((entry) => h('option', { value: entry.id }, `${entry.name} (${entry.id} · ${entry.division})`)));
    } catch {
      // Without the team list the supervision actions ask for a team and say so.
    }
  }
  replace(main, h('p', {}, h('a', { href: '#/orders', id: 'back-to-orders' }, t('orders.back'))),
    h('h1', {}, t('orders.detail', { id })), h('div', { class: 'order-detail' }, body, actions));
  load();
  loadTeams();
  let pending = null;
  const unsubscribe = context.onEvent((event) => {
    if (event.name !== 'work_order' || (event.data && event.data.id !== id)) return;
    clearTimeout(pending);
    pending = setTimeout(load, 200);
  });
  const timer = setInterval(load, REFRESH_MS);
  // The SLA clocks tick between loads.
  const clock = setInterval(() => {
    if (!current) return;
    const order = current.order || {};
    document.getElementById('sla-ack')?.replaceWith(slaClock('sla-ack', current.ack_due_ms, order.first_acked_ms));
    document.getElementById('sla-handle')?.replaceWith(slaClock('sla-handle', current.handle_due_ms, order.first_resolved_ms));
  }, 1000);
  return () => {
    stopped = true;
    clearInterval(timer);
    clearInterval(clock);
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
