// 安全: the failing baseline checks of the scope by severity with their evidence and
// remediation (/api/v1/posture/failing), the file changes FIM reported and the other findings
// (/api/v1/posture/findings), the posture score rolled up by division
// (/api/v1/posture/divisions, one level down, each row drilling in), and one host's latest
// baseline run (#/security/AGENT_ID, /api/v1/agents/{id}/posture).

import { h, replace } from '../dom.js';
import { t, formatTime } from '../i18n.js';
import { get } from '../api.js';
import { table, section, severityBadge } from '../ui.js';

const SEVERITIES = ['critical', 'high', 'medium', 'low'];
const rank = (severity) => SEVERITIES.length - Math.max(SEVERITIES.indexOf(severity), -1);

function query(pairs) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(pairs)) if (value) search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : '';
}

function lines(items) {
  return items && items.length ? h('ul', { class: 'evidence' }, items.map((line) => h('li', {}, h('code', {}, line)))) : '—';
}

function renderOverview(main, context, params) {
  const division = params.get('division') || '';
  const severity = params.get('severity') || '';
  const error = h('p', { class: 'error', role: 'alert' });
  const counts = h('section', { id: 'security-counts', class: 'cards', 'aria-label': t('security.by_severity') });
  const failing = h('div', { id: 'security-failing' }, h('p', {}, t('common.loading')));
  const fim = h('div', { id: 'security-fim' }, h('p', {}, t('common.loading')));
  const findings = h('div', { id: 'security-findings' }, h('p', {}, t('common.loading')));
  const divisions = h('div', { id: 'security-divisions' }, h('p', {}, t('common.loading')));
  const severityInput = h('select', { id: 'security-severity', name: 'severity' },
    h('option', { value: '' }, t('security.severity.all')),
    SEVERITIES.map((name) => h('option', { value: name }, t(`severity.${name}`))));
  severityInput.value = severity;
  const divisionInput = h('input', { id: 'security-division', name: 'division', inputmode: 'numeric', pattern: '[0-9]*', value: division });
  const form = h('form', {
    class: 'filters', 'aria-label': t('security.filters'),
    onsubmit: (event) => {
      event.preventDefault();
      location.hash = `#/security${query({ division: divisionInput.value.trim(), severity: severityInput.value })}`;
    },
  },
  h('label', { for: 'security-severity' }, t('security.severity')), severityInput,
  h('label', { for: 'security-division' }, t('orders.division')), divisionInput,
  h('button', { type: 'submit', id: 'security-apply', class: 'primary' }, t('orders.apply')));
  let stopped = false;
  const fail = (target, problem) => { if (!stopped) replace(target, h('p', { class: 'error', role: 'alert' }, context.describeError(problem))); };

  async function loadFailing() {
    try {
      const rows = await get(`/api/v1/posture/failing${query({ division, severity })}`);
      if (stopped) return;
      rows.sort((a, b) => rank(b.severity) - rank(a.severity) || a.id.localeCompare(b.id) || a.hostname.localeCompare(b.hostname));
      const bySeverity = Object.fromEntries(SEVERITIES.map((name) => [name, 0]));
      for (const row of rows) bySeverity[row.severity] = (bySeverity[row.severity] || 0) + 1;
      replace(counts, SEVERITIES.map((name) => h('div', { class: `card card-sev-${name}`, dataset: { severity: name } },
        h('div', { class: 'card-label' }, t('security.failing.count', { severity: t(`severity.${name}`) })),
        h('div', { class: 'card-value', dataset: { count: String(bySeverity[name]) } }, String(bySeverity[name])))));
      replace(failing, table({ id: 'failing-table' }, null,
        [t('security.severity'), t('security.check'), t('assets.hostname'), t('assets.division'), t('security.evidence'), t('security.remediation')],
        rows.map((row) => h('tr', { dataset: { check: row.id, agentId: row.agent_id, severity: row.severity } },
          h('td', {}, severityBadge(row.severity)),
          h('th', { scope: 'row' }, h('span', { class: 'code' }, row.id), h('div', {}, row.title)),
          h('td', {}, h('a', { href: `#/security/${encodeURIComponent(row.agent_id)}` }, row.hostname || row.agent_id)),
          h('td', {}, row.division_path),
          h('td', {}, lines(row.evidence)),
          h('td', {}, row.remediation || '—')))));
    } catch (problem) {
      replace(counts);
      fail(failing, problem);
    }
  }

  async function loadFindings() {
    try {
      const rows = await get(`/api/v1/posture/findings${query({ division, severity, since: '30d', limit: 500 })}`);
      if (stopped) return;
      rows.reverse();
      const files = rows.filter((row) => row.kind === 'file_changed');
      const others = rows.filter((row) => row.kind !== 'file_changed');
      replace(fim, table({ id: 'fim-table' }, null,
        [t('security.time'), t('security.file'), t('assets.hostname'), t('security.finding'), t('security.evidence')],
        files.map((row) => h('tr', { dataset: { agentId: row.agent_id } },
          h('td', {}, formatTime(row.time)), h('th', { scope: 'row' }, h('code', {}, row.subject)),
          h('td', {}, h('a', { href: `#/security/${encodeURIComponent(row.agent_id)}` }, row.hostname || row.agent_id)),
          h('td', {}, row.title), h('td', {}, lines(row.evidence))))));
      replace(findings, table({ id: 'findings-table' }, null,
        [t('security.time'), t('security.severity'), t('security.kind'), t('assets.hostname'), t('security.finding'), t('security.remediation')],
        others.map((row) => h('tr', { dataset: { kind: row.kind } },
          h('td', {}, formatTime(row.time)), h('td', {}, severityBadge(row.severity)), h('td', {}, t(`finding.${row.kind}`)),
          h('td', {}, h('a', { href: `#/security/${encodeURIComponent(row.agent_id)}` }, row.hostname || row.agent_id)),
          h('td', {}, row.title, row.evidence.length ? lines(row.evidence) : null), h('td', {}, row.remediation || '—')))));
    } catch (problem) {
      fail(fim, problem);
      replace(findings);
    }
  }

  async function loadDivisions() {
    try {
      const rows = await get(`/api/v1/posture/divisions${query({ division })}`);
      if (stopped) return;
      rows.sort((a, b) => (a.score ?? 101) - (b.score ?? 101) || a.division.localeCompare(b.division));
      replace(divisions, table({ id: 'posture-divisions' }, null,
        [t('overview.division'), t('security.hosts'), t('security.score'), t('security.min_score'), t('security.failing_high')],
        rows.map((row) => h('tr', { dataset: { code: row.division } },
          h('th', { scope: 'row' }, h('a', { href: `#/security${query({ division: row.division, severity })}` }, row.name || row.division)),
          h('td', {}, String(row.hosts)),
          h('td', {}, row.score === null ? '—' : scoreBadge(row.score)),
          h('td', {}, row.min_score === null ? '—' : String(row.min_score)),
          h('td', {}, String(row.failing_high))))));
    } catch (problem) {
      fail(divisions, problem);
    }
  }

  replace(main, h('h1', {}, t('security.title')), form, error, counts,
    section('security-failing-title', t('security.failing'), failing),
    h('div', { class: 'columns-2' },
      section('security-divisions-title', t('security.divisions'), divisions),
      section('security-fim-title', t('security.fim'), fim)),
    section('security-findings-title', t('security.findings'), findings));
  loadFailing();
  loadFindings();
  loadDivisions();
  return () => { stopped = true; };
}

function scoreBadge(score) {
  const value = Number(score);
  const state = value >= 90 ? 'ok' : value >= 70 ? 'warn' : 'down';
  return h('span', { class: `state state-${state}`, dataset: { score: value.toFixed(0) } }, value.toFixed(1));
}

const VERDICT_ORDER = { fail: 0, error: 1, pass: 2, not_applicable: 3 };

function renderHost(main, context, id) {
  const error = h('p', { class: 'error', role: 'alert' });
  const body = h('div', { id: 'posture-body' }, h('p', {}, t('common.loading')));
  let stopped = false;
  (async () => {
    try {
      const posture = await get(`/api/v1/agents/${encodeURIComponent(id)}/posture`);
      if (stopped) return;
      const results = [...posture.results].sort((a, b) => (VERDICT_ORDER[a.result] ?? 9) - (VERDICT_ORDER[b.result] ?? 9)
        || rank(b.severity) - rank(a.severity) || a.id.localeCompare(b.id));
      const failed = results.filter((result) => result.result === 'fail').length;
      replace(body,
        h('dl', { class: 'facts' },
          h('dt', {}, t('assets.hostname')), h('dd', {}, h('a', { href: `#/assets/${encodeURIComponent(id)}` }, posture.hostname || id)),
          h('dt', {}, t('assets.division')), h('dd', {}, posture.division_path),
          h('dt', {}, t('security.score')), h('dd', { id: 'posture-score' }, scoreBadge(posture.score)),
          h('dt', {}, t('security.policy')), h('dd', {}, posture.policy),
          h('dt', {}, t('security.failed')), h('dd', {}, String(failed)),
          h('dt', {}, t('security.taken')), h('dd', {}, formatTime(posture.taken)),
          h('dt', {}, t('security.signed')), h('dd', {}, t(posture.signed ? 'security.signed.yes' : 'security.signed.no'))),
        table({ id: 'posture-results' }, t('security.results'),
          [t('security.verdict'), t('security.severity'), t('security.check'), t('security.mlps'), t('security.evidence'), t('security.remediation')],
          results.map((result) => h('tr', { dataset: { check: result.id, verdict: result.result } },
            h('td', {}, h('span', { class: `verdict verdict-${result.result}` }, t(`verdict.${result.result}`))),
            h('td', {}, severityBadge(result.severity)),
            h('th', { scope: 'row' }, h('span', { class: 'code' }, result.id), h('div', {}, result.title)),
            h('td', {}, result.mlps || '—'),
            h('td', {}, lines(result.evidence)),
            h('td', {}, result.result === 'pass' ? '—' : (result.remediation || '—'))))));
    } catch (problem) {
      if (stopped) return;
      replace(body);
      error.textContent = problem.status === 404 ? t('security.no_run', { message: problem.message }) : context.describeError(problem);
    }
  })();
  replace(main, h('p', {}, h('a', { href: '#/security', id: 'back-to-security' }, t('security.back'))),
    h('h1', {}, t('security.host', { id })), error, body);
  return () => { stopped = true; };
}

/** `#/security?division=C&severity=S` and `#/security/AGENT_ID`. */
export function render(main, context, id, params) {
  return id ? renderHost(main, context, id) : renderOverview(main, context, params);
}
