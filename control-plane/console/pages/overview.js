// 总览: the whole scope on one screen — agents online by level and by unit below, open work
// orders, this month's SLA compliance and escalations, the posture score distribution and the
// checks failing on most hosts, and the live event feed. The numbers come from /api/v1/overview, computed by the
// control plane; the page reloads them every few seconds and whenever an event arrives.

import { h, replace } from '../dom.js';
import { t, formatTime } from '../i18n.js';
import { get } from '../api.js';
import { duration, severityBadge } from '../ui.js';

const REFRESH_MS = 5000;

export function describeEvent(event) {
  const data = event.data || {};
  if (event.name === 'agent') {
    return t(data.online ? 'event.agent.online' : 'event.agent.offline', {
      host: data.hostname, path: data.division_path,
    });
  }
  if (event.name === 'work_order') {
    const state = t(`wo.${data.state}`);
    if (!data.previous) return t('event.order.new', { id: data.id, state, title: data.title });
    return t('event.order.change', { id: data.id, from: t(`wo.${data.previous}`), state, title: data.title });
  }
  return t('event.lagged');
}

function stateBadge(state) {
  return h('span', { class: `state state-${state}`, dataset: { state } }, t(`state.${state}`));
}

function percent(online, total) {
  return total ? `${((online * 100) / total).toFixed(1)}%` : '—';
}

function card(label, value, extra) {
  return h('div', { class: 'card' }, h('div', { class: 'card-label' }, label),
    h('div', { class: 'card-value' }, String(value)), extra || null);
}

function table(caption, headers, rows) {
  return h('table', {}, h('caption', {}, caption),
    h('thead', {}, h('tr', {}, headers.map((header) => h('th', { scope: 'col' }, header)))),
    h('tbody', {}, rows));
}

function kpiCards(kpi) {
  if (!kpi) return null;
  const sla = kpi.sla_compliance_percent == null ? '—' : `${kpi.sla_compliance_percent.toFixed(1)}%`;
  return h('section', { class: 'cards', id: 'overview-kpi', 'aria-label': t('overview.kpi', { month: kpi.month }) },
    h('div', { class: 'card', id: 'kpi-sla' }, h('div', { class: 'card-label' }, t('overview.kpi.sla', { month: kpi.month })),
      h('div', { class: 'card-value', dataset: { value: String(kpi.sla_compliance_percent ?? '') } }, sla)),
    h('div', { class: 'card', id: 'kpi-escalations' }, h('div', { class: 'card-label' }, t('overview.kpi.escalations', { month: kpi.month })),
      h('div', { class: 'card-value', dataset: { value: String(kpi.escalations) } }, String(kpi.escalations))),
    card(t('overview.kpi.opened', { month: kpi.month }), kpi.opened),
    card(t('overview.kpi.mtta'), duration(kpi.mtta_ms)),
    card(t('overview.kpi.mttr'), duration(kpi.mttr_ms)));
}

function postureTables(posture) {
  const most = Math.max(1, ...posture.buckets.map((bucket) => bucket.hosts));
  return [
    table(t('overview.posture', {
      hosts: posture.hosts, mean: posture.mean == null ? '—' : posture.mean.toFixed(1),
    }), [t('overview.posture.score'), t('overview.posture.hosts')],
    posture.buckets.map((bucket) => h('tr', { dataset: { from: String(bucket.from), hosts: String(bucket.hosts) } },
      h('th', { scope: 'row' }, `${bucket.from}–${bucket.to}`),
      h('td', {}, h('meter', {
        min: 0, max: most, value: bucket.hosts, 'aria-label': `${bucket.from}–${bucket.to}`,
      }), ' ', String(bucket.hosts))))),
    table(t('overview.failing'), [t('overview.failing.check'), t('orders.severity'), t('overview.posture.hosts')],
      posture.top_failing.length ? posture.top_failing.map((check) => h('tr', { dataset: { check: check.id } },
        h('th', { scope: 'row' }, h('a', { href: '#/security' }, check.title || check.id), ' ', h('code', {}, check.id)),
        h('td', {}, severityBadge(check.severity)), h('td', {}, String(check.hosts))))
        : h('tr', {}, h('td', { colspan: 3 }, t('common.none')))),
  ];
}

function renderData(container, data) {
  const agents = data.agents;
  const scopePath = data.path.map((division) => division.name).join(' / ');
  const levels = data.by_level.filter((row) => row.online + row.offline > 0);
  const children = [...data.children].sort((a, b) => (b.total - a.total) || a.code.localeCompare(b.code));
  const orders = data.work_orders;
  replace(container,
    h('p', { class: 'scope' }, t('overview.scope', { path: scopePath }), ' · ',
      h('span', { class: 'muted' }, t('common.updated', { time: formatTime(data.generated_at) }))),
    h('section', { class: 'cards', 'aria-label': t('overview.agents') },
      card(t('overview.total'), agents.total),
      h('div', { class: 'card card-ok', id: 'agents-online' }, h('div', { class: 'card-label' }, t('overview.online')),
        h('div', { class: 'card-value', dataset: { count: String(agents.online) } }, String(agents.online))),
      h('div', { class: 'card card-down', id: 'agents-offline' }, h('div', { class: 'card-label' }, t('overview.offline')),
        h('div', { class: 'card-value', dataset: { count: String(agents.total - agents.online) } },
          String(agents.total - agents.online))),
      card(t('overview.online_rate'), percent(agents.online, agents.total)),
      orders ? card(t('overview.orders.open'), orders.open) : null,
      orders ? card(t('overview.orders.escalated'), orders.escalated) : null),
    kpiCards(data.kpi),
    h('div', { class: 'columns' },
      h('section', {},
        table(t('overview.by_level'), [t('overview.level'), t('overview.online'), t('overview.offline')],
          levels.length ? levels.map((row) => h('tr', {},
            h('th', { scope: 'row' }, t(`level.${row.level}`)), h('td', {}, String(row.online)),
            h('td', {}, String(row.offline)))) : h('tr', {}, h('td', { colspan: 3 }, t('common.none')))),
        orders ? [
          table(t('overview.orders.by_severity'), [t('orders.severity'), t('overview.orders.open')],
            Object.keys(orders.by_severity).length ? Object.entries(orders.by_severity).map(([severity, count]) =>
              h('tr', {}, h('th', { scope: 'row' }, severity), h('td', {}, String(count))))
              : h('tr', {}, h('td', { colspan: 2 }, t('common.none')))),
          table(t('overview.orders.by_state'), [t('orders.state'), t('overview.orders.open')],
            Object.keys(orders.by_state).length ? Object.entries(orders.by_state).map(([state, count]) =>
              h('tr', {}, h('th', { scope: 'row' }, t(`wo.${state}`)), h('td', {}, String(count))))
              : h('tr', {}, h('td', { colspan: 2 }, t('common.none')))),
        ] : h('p', { class: 'muted' }, t('overview.orders.hidden')),
        h('div', { id: 'overview-posture' }, postureTables(data.posture))),
      h('section', {},
        table(t('overview.by_child'),
          [t('overview.division'), t('overview.online'), t('overview.total'), t('overview.online_rate'), t('overview.state')],
          children.length ? children.map((child) => h('tr', { dataset: { code: child.code } },
            h('th', { scope: 'row' }, h('a', { href: `#/network/${child.code}` }, child.name)),
            h('td', {}, String(child.online)), h('td', {}, String(child.total)),
            h('td', {}, percent(child.online, child.total)), h('td', {}, stateBadge(child.state))))
            : h('tr', {}, h('td', { colspan: 5 }, t('common.none')))))));
}

function renderFeed(list, feed) {
  replace(list, feed.length
    ? feed.map((event) => h('li', { class: `feed-${event.name}`, dataset: { kind: event.name } },
      h('time', {}, formatTime(event.data && event.data.at ? event.data.at : event.received)), ' ',
      describeEvent(event)))
    : h('li', { class: 'muted' }, t('overview.feed.empty')));
}

export function render(main, context) {
  const body = h('div', { id: 'overview-body' }, h('p', {}, t('common.loading')));
  const error = h('p', { class: 'error', role: 'alert' });
  const feed = h('ol', { id: 'event-feed', class: 'feed', 'aria-live': 'polite' });
  replace(main, h('h1', {}, t('overview.title')), error,
    h('div', { class: 'overview' }, body,
      h('section', { class: 'feed-panel', 'aria-labelledby': 'feed-title' },
        h('h2', { id: 'feed-title' }, t('overview.feed')), feed)));
  renderFeed(feed, context.feed);
  let stopped = false;
  let pending = null;
  async function load() {
    try {
      const data = await get('/api/v1/overview');
      if (stopped) return;
      error.textContent = '';
      renderData(body, data);
    } catch (problem) {
      if (!stopped) error.textContent = context.describeError(problem);
    }
  }
  load();
  const timer = setInterval(load, REFRESH_MS);
  const unsubscribe = context.onEvent(() => {
    renderFeed(feed, context.feed);
    clearTimeout(pending);
    pending = setTimeout(load, 300);
  });
  return () => {
    stopped = true;
    clearInterval(timer);
    clearTimeout(pending);
    unsubscribe();
  };
}
