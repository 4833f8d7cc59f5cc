// 服务: each catalogued service's state now (/api/v1/services/{id}/status) and, for a CST
// month, its availability, failures, MTBF, MTTR and provision rate
// (/api/v1/services/{id}/report); below, the work-order KPIs of the user's scope for the same
// month (/api/v1/kpi): MTTA, MTTR, SLA compliance, escalations, reopen rate, by team and by
// division.

import { h, replace } from '../dom.js';
import { t } from '../i18n.js';
import { get, scope } from '../api.js';
import { table, section, percent, duration, currentMonth } from '../ui.js';

const STATUS_CLASS = { UP: 'ok', DOWN: 'down', MAINTENANCE: 'warn', UNKNOWN: 'empty' };

function statusBadge(status) {
  return h('span', { class: `state state-${STATUS_CLASS[status] || 'empty'}`, dataset: { status } }, t(`service.${status}`));
}

function kpiRow(row, kind) {
  const kpi = row.kpi;
  return h('tr', { dataset: { id: row.id } },
    h('th', { scope: 'row' }, kind === 'total' ? t('kpi.total') : (row.name || row.id)),
    h('td', {}, String(kpi.opened)),
    h('td', {}, duration(kpi.mtta_ms)),
    h('td', {}, duration(kpi.mttr_ms)),
    h('td', {}, duration(kpi.handling_time_ms)),
    h('td', {}, percent(kpi.sla_compliance_percent)),
    h('td', {}, String(kpi.escalations)),
    h('td', {}, percent(kpi.reopen_rate_percent)));
}

export function render(main, context, _argument, params) {
  const period = params.get('period') || currentMonth();
  const error = h('p', { class: 'error', role: 'alert' });
  const services = h('div', { id: 'services-body' }, h('p', {}, t('common.loading')));
  const kpi = h('div', { id: 'kpi-body' }, h('p', {}, t('common.loading')));
  const month = h('input', { id: 'services-period', name: 'period', type: 'month', value: period, required: true });
  const form = h('form', {
    class: 'filters', 'aria-label': t('services.filters'),
    onsubmit: (event) => {
      event.preventDefault();
      if (month.value) location.hash = `#/services?period=${encodeURIComponent(month.value)}`;
    },
  }, h('label', { for: 'services-period' }, t('services.period')), month,
  h('button', { type: 'submit', id: 'services-apply', class: 'primary' }, t('orders.apply')));
  let stopped = false;

  async function loadServices() {
    try {
      const catalog = await get('/api/v1/services');
      if (stopped) return;
      const rows = await Promise.all(catalog.map(async (service) => {
        const path = `/api/v1/services/${encodeURIComponent(service.id)}`;
        const [status, report] = await Promise.all([
          get(`${path}/status`).catch((problem) => ({ problem })),
          get(`${path}/report?period=${encodeURIComponent(period)}`).catch((problem) => ({ problem })),
        ]);
        return { service, status, report };
      }));
      if (stopped) return;
      const failed = rows.find((row) => row.report.problem || row.status.problem);
      error.textContent = failed ? context.describeError(failed.report.problem || failed.status.problem) : '';
      replace(services, table({ id: 'services-table' }, t('services.caption', { period }),
        [t('services.name'), t('services.team'), t('assets.division'), t('services.status'), t('services.availability'),
          t('services.failures'), t('services.mtbf'), t('services.mttr'), t('services.provision'), t('services.maintenance')],
        rows.map(({ service, status, report }) => {
          const summary = report.summary || {};
          return h('tr', { dataset: { serviceId: service.id } },
            h('th', { scope: 'row' }, service.name, h('div', { class: 'muted small' }, service.id)),
            h('td', {}, service.owner_team),
            h('td', {}, service.division),
            h('td', {}, status.status ? statusBadge(status.status) : '—'),
            h('td', { class: 'availability' }, report.problem ? '—' : percent(summary.availability_percent)),
            h('td', {}, report.problem ? '—' : String(summary.failures)),
            h('td', {}, duration(summary.mtbf_ms)),
            h('td', {}, duration(summary.mttr_ms)),
            h('td', {}, report.problem ? '—' : percent(summary.provision_rate_percent)),
            h('td', {}, report.problem ? '—' : duration(summary.maintenance_ms || null)));
        })),
      rows.some((row) => row.report.notes && row.report.notes.length)
        ? h('ul', { class: 'muted small' }, rows.flatMap((row) => (row.report.notes || []).map((note) => h('li', {}, `${row.service.name}: ${note}`))))
        : null);
    } catch (problem) {
      if (!stopped) replace(services, h('p', { class: 'error', role: 'alert' }, context.describeError(problem)));
    }
  }

  async function loadKpi() {
    try {
      const division = scope();
      const search = new URLSearchParams({ period });
      if (division) search.set('division', division);
      const view = await get(`/api/v1/kpi?${search}`);
      if (stopped) return;
      const headers = [t('kpi.unit'), t('kpi.opened'), t('kpi.mtta'), t('kpi.mttr'), t('kpi.handling'), t('kpi.sla'),
        t('kpi.escalations'), t('kpi.reopen')];
      replace(kpi,
        h('p', { class: 'muted' }, t('kpi.scope', { path: view.division_path, period: view.period })),
        table({ id: 'kpi-total' }, t('kpi.total'), headers, [kpiRow(view.total, 'total')]),
        table({ id: 'kpi-teams' }, t('kpi.teams'), headers, view.teams.map((row) => kpiRow(row))),
        table({ id: 'kpi-divisions' }, t('kpi.divisions'), headers, view.divisions.map((row) => kpiRow(row))));
    } catch (problem) {
      if (!stopped) replace(kpi, h('p', { class: 'error', role: 'alert' }, context.describeError(problem)));
    }
  }

  replace(main, h('h1', {}, t('services.title')), form, error,
    section('services-list-title', t('services.list'), services),
    section('kpi-title', t('kpi.title'), kpi));
  loadServices();
  loadKpi();
  return () => { stopped = true; };
}
