// 资产: the agents of the user's scope with search and filters (division, OS, package, port,
// online) and a CSV export of what the filters leave; one agent's detail with its hardware,
// software, listening ports and the change history as a timeline.
//
// The list is /api/v1/agents (everything the table shows); a package, port or OS criterion
// goes to /api/v1/assets/find, which answers from the stored asset records, and the list
// keeps the agents it names. Scope is the API's: a division outside it is refused with 403.

import { h, replace } from '../dom.js';
import { t, formatTime } from '../i18n.js';
import { get } from '../api.js';
import { table, section, bytes, onlineBadge, csv, download } from '../ui.js';

/** Filters survive a visit to a detail page. */
const filters = { text: '', division: '', os: '', package: '', port: '', online: '' };

function query(pairs) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(pairs)) if (value !== '' && value !== undefined) search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** The agents and, when asked by package/port/OS, what matched on each. */
async function loadRows() {
  const agents = await get(`/api/v1/agents${query({ division: filters.division })}`);
  let rows = agents.map((agent) => ({ agent, packages: [], listening: [] }));
  if (filters.os || filters.package || filters.port) {
    const found = await get(`/api/v1/assets/find${query({
      division: filters.division, os: filters.os, package: filters.package, port: filters.port,
    })}`);
    const matches = new Map();
    for (const row of found) {
      const entry = matches.get(row.agent_id) || { os: row.os, packages: [], listening: row.listening };
      if (row.package) entry.packages.push(row.package);
      matches.set(row.agent_id, entry);
    }
    rows = rows.filter((row) => matches.has(row.agent.id)).map((row) => {
      const match = matches.get(row.agent.id);
      return { agent: { ...row.agent, os: match.os || row.agent.os }, packages: match.packages, listening: match.listening };
    });
  }
  if (filters.online) rows = rows.filter((row) => String(row.agent.online) === filters.online);
  const needle = filters.text.toLowerCase();
  if (needle) {
    rows = rows.filter(({ agent }) => [agent.hostname, agent.id, agent.division_path, agent.division, agent.os,
      agent.remote_address].some((field) => (field || '').toLowerCase().includes(needle)));
  }
  rows.sort((a, b) => a.agent.division_path.localeCompare(b.agent.division_path, 'zh-CN')
    || a.agent.hostname.localeCompare(b.agent.hostname));
  return rows;
}

const CSV_HEADER = ['id', 'hostname', 'division', 'division_path', 'role', 'os', 'arch', 'online', 'last_seen',
  'agent_version', 'remote_address', 'packages', 'ports'];

/** The CSV of the rows shown (header in English, values as the API gave them). */
export function assetsCsv(rows) {
  return csv(CSV_HEADER, rows.map(({ agent, packages, listening }) => [agent.id, agent.hostname, agent.division,
    agent.division_path, agent.role, agent.os, agent.arch, agent.online, agent.last_seen || '', agent.agent_version,
    agent.remote_address || '', packages.map((p) => `${p.name} ${p.version}`).join('; '),
    listening.map((l) => `${l.proto}/${l.address}:${l.port}`).join('; ')]));
}

function renderList(main, context) {
  const error = h('p', { class: 'error', role: 'alert' });
  const count = h('p', { id: 'assets-count', class: 'muted', role: 'status' });
  const body = h('div', { id: 'assets-body' }, h('p', {}, t('common.loading')));
  const input = (name, attributes) => {
    const element = h('input', { id: `assets-${name}`, name, value: filters[name], ...attributes });
    return element;
  };
  const text = input('text', { type: 'search', placeholder: t('assets.search.placeholder') });
  const division = input('division', { inputmode: 'numeric', pattern: '[0-9]*', size: 12 });
  const os = input('os', { size: 12 });
  const pkg = input('package', { size: 14 });
  const port = input('port', { type: 'number', min: 1, max: 65535 });
  const online = h('select', { id: 'assets-online', name: 'online' },
    h('option', { value: '' }, t('assets.online.any')),
    h('option', { value: 'true' }, t('common.online')),
    h('option', { value: 'false' }, t('common.offline')));
  online.value = filters.online;
  let rows = [];
  let stopped = false;
  async function load() {
    try {
      const loaded = await loadRows();
      if (stopped) return;
      rows = loaded;
      error.textContent = '';
      count.textContent = t('assets.count', { count: rows.length });
      const searching = filters.package || filters.port;
      replace(body, table({ id: 'assets-table' }, t('assets.title'),
        [t('assets.hostname'), t('assets.division'), t('assets.os'), t('assets.role'), t('assets.online'),
          t('assets.last_seen'), t('assets.version'), searching ? t('assets.matched') : null].filter(Boolean),
        rows.map(({ agent, packages, listening }) => h('tr', { dataset: { agentId: agent.id } },
          h('th', { scope: 'row' }, h('a', { href: `#/assets/${encodeURIComponent(agent.id)}` }, agent.hostname || agent.id),
            h('div', { class: 'muted small' }, agent.id)),
          h('td', {}, agent.division_path),
          h('td', { class: 'os' }, agent.os || '—'),
          h('td', {}, t(`role.${agent.role}`)),
          h('td', {}, onlineBadge(agent.online)),
          h('td', {}, formatTime(agent.last_seen)),
          h('td', {}, agent.agent_version),
          searching ? h('td', {}, [...packages.map((p) => `${p.name} ${p.version}`),
            ...listening.map((l) => `${l.proto} ${l.address}:${l.port} ${l.process}`)].join(', ') || '—') : null))));
    } catch (problem) {
      if (!stopped) {
        error.textContent = context.describeError(problem);
        replace(body);
        count.textContent = '';
      }
    }
  }
  const exportButton = h('button', {
    type: 'button', id: 'assets-export',
    onclick: () => {
      const stamp = new Date().toISOString().slice(0, 10);
      download(`bagui-assets-${stamp}.csv`, assetsCsv(rows));
    },
  }, t('assets.export'));
  const form = h('form', {
    class: 'filters', 'aria-label': t('assets.filters'),
    onsubmit: (event) => {
      event.preventDefault();
      Object.assign(filters, {
        text: text.value.trim(), division: division.value.trim(), os: os.value.trim(), package: pkg.value.trim(),
        port: port.value.trim(), online: online.value,
      });
      load();
    },
  },
  h('label', { for: 'assets-text' }, t('assets.search')), text,
  h('label', { for: 'assets-division' }, t('assets.division_code')), division,
  h('label', { for: 'assets-os' }, t('assets.os')), os,
  h('label', { for: 'assets-package' }, t('assets.package')), pkg,
  h('label', { for: 'assets-port' }, t('assets.port')), port,
  h('label', { for: 'assets-online' }, t('assets.online')), online,
  h('button', { type: 'submit', id: 'assets-apply', class: 'primary' }, t('orders.apply')),
  exportButton);
  replace(main, h('h1', {}, t('assets.title')), form, error, count, body);
  load();
  return () => { stopped = true; };
}

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)]));
}

function describeChange(change) {
  const short = (value) => {
    if (value === null || value === undefined) return '—';
    if (typeof value !== 'object') return String(value);
    for (const field of ['version', 'process', 'active', 'shell', 'size_bytes', 'pretty_name', 'state']) {
      if (field in value) return String(value[field]);
    }
    return JSON.stringify(value);
  };
  if (change.op === 'added') return `+ ${short(change.new)}`;
  if (change.op === 'removed') return `− ${short(change.old)}`;
  return `${short(change.old)} → ${short(change.new)}`;
}

function renderDetail(main, context, id) {
  const error = h('p', { class: 'error', role: 'alert' });
  const body = h('div', { id: 'asset-body' }, h('p', {}, t('common.loading')));
  const history = h('div', { id: 'asset-history' }, h('p', {}, t('common.loading')));
  let stopped = false;
  const packageFilter = h('input', { id: 'package-filter', type: 'search', placeholder: t('assets.package.filter') });

  function showRecord(agent, record) {
    const hardware = record.hardware;
    const packageRows = () => record.packages
      .filter((p) => !packageFilter.value || p.name.includes(packageFilter.value.trim()))
      .map((p) => h('tr', {}, h('td', {}, p.name), h('td', {}, p.version), h('td', {}, p.arch), h('td', {}, p.source)));
    const packageBody = h('tbody', {}, packageRows());
    packageFilter.oninput = () => replace(packageBody, packageRows());
    return [
      h('div', { class: 'columns-2' },
        section('asset-os', t('assets.system'), facts([
          [t('assets.os'), h('span', { id: 'asset-os-name' }, record.os.pretty_name || agent.os)],
          [t('assets.kernel'), record.os.kernel || '—'],
          [t('assets.arch'), record.os.arch || agent.arch],
          [t('assets.snapshot'), formatTime(record.taken)],
          [t('assets.updated'), formatTime(record.updated)],
          record.stale ? [t('assets.stale'), t('assets.stale.detail')] : null,
        ])),
        section('asset-hardware', t('assets.hardware'), facts([
          [t('assets.cpu'), `${hardware.cpu_model || '—'} · ${t('assets.cpu.threads', { cores: hardware.cpu_cores, threads: hardware.cpu_threads })}`],
          [t('assets.memory'), bytes(hardware.memory_bytes)],
          [t('assets.vendor'), [hardware.vendor, hardware.product].filter(Boolean).join(' ') || '—'],
          [t('assets.serial'), hardware.serial || '—'],
          [t('assets.virtualization'), hardware.virtualization || '—'],
        ]),
        table({}, t('assets.disks'), [t('assets.name'), t('assets.size'), t('assets.model')],
          hardware.disks.map((disk) => h('tr', {}, h('td', {}, disk.name), h('td', {}, bytes(disk.size_bytes)), h('td', {}, disk.model || '—')))),
        table({}, t('assets.filesystems'), [t('assets.mount'), t('assets.device'), t('assets.fs_type'), t('assets.size')],
          hardware.filesystems.map((fs) => h('tr', {}, h('td', {}, fs.mount_point), h('td', {}, fs.device), h('td', {}, fs.fs_type),
            h('td', {}, bytes(fs.size_bytes))))),
        table({}, t('assets.nics'), [t('assets.name'), t('assets.mac'), t('assets.addresses'), t('assets.nic_state')],
          hardware.nics.map((nic) => h('tr', {}, h('td', {}, nic.name), h('td', {}, nic.mac), h('td', {}, nic.addresses.join(', ')),
            h('td', {}, nic.state)))))),
      section('asset-ports', t('assets.ports'),
        table({ id: 'asset-ports-table' }, null, [t('assets.proto'), t('assets.address'), t('assets.port'), t('assets.process')],
          record.listening.map((l) => h('tr', { dataset: { port: String(l.port) } }, h('td', {}, l.proto), h('td', {}, l.address),
            h('td', {}, String(l.port)), h('td', {}, l.process ? `${l.process} (${l.pid})` : '—'))))),
      section('asset-software', t('assets.software', { count: record.packages.length }),
        h('label', { for: 'package-filter' }, t('assets.package.filter')), ' ', packageFilter,
        h('table', { id: 'asset-packages' },
          h('thead', {}, h('tr', {}, [t('assets.name'), t('assets.version'), t('assets.arch'), t('assets.source')]
            .map((label) => h('th', { scope: 'col' }, label)))), packageBody),
        table({}, t('assets.services'), [t('assets.name'), t('assets.active'), t('assets.enabled')],
          record.services.map((service) => h('tr', {}, h('td', {}, service.name), h('td', {}, `${service.active} (${service.sub})`),
            h('td', {}, service.enabled)))),
        table({}, t('assets.users'), [t('assets.name'), 'UID', t('assets.shell')],
          record.users.map((user) => h('tr', {}, h('td', {}, user.name), h('td', {}, String(user.uid)), h('td', {}, user.shell))))),
    ];
  }

  async function load() {
    try {
      const agent = await get(`/api/v1/agents/${encodeURIComponent(id)}`);
      if (stopped) return;
      let record = null;
      let missing = '';
      try {
        record = await get(`/api/v1/agents/${encodeURIComponent(id)}/assets`);
      } catch (problem) {
        if (problem.status !== 404) throw problem;
        missing = problem.message;
      }
      if (stopped) return;
      replace(body,
        facts([
          [t('assets.hostname'), h('span', { id: 'asset-hostname' }, agent.hostname || '—')],
          [t('assets.id'), agent.id],
          [t('assets.division'), agent.division_path],
          [t('assets.role'), t(`role.${agent.role}`)],
          [t('assets.online'), onlineBadge(agent.online)],
          [t('assets.last_seen'), formatTime(agent.last_seen)],
          [t('assets.version'), agent.agent_version],
          [t('assets.remote'), agent.remote_address || '—'],
          [t('assets.joined'), formatTime(agent.joined)],
          [t('assets.certificate'), formatTime(agent.certificate_expires)],
          [t('assets.posture'), h('a', { href: `#/security/${encodeURIComponent(agent.id)}` }, t('assets.posture.link'))],
        ]),
        record ? showRecord(agent, record) : h('p', { id: 'asset-missing', class: 'muted' }, t('assets.no_snapshot', { message: missing })));
    } catch (problem) {
      if (!stopped) error.textContent = context.describeError(problem);
      replace(body);
    }
    try {
      const changes = await get(`/api/v1/assets/changes${query({ agent: id, limit: 500 })}`);
      if (stopped) return;
      changes.reverse();
      replace(history, changes.length
        ? h('ol', { id: 'asset-changes', class: 'timeline' }, changes.map((change) => h('li', {
          dataset: { section: change.section, op: change.op },
        },
        h('time', {}, formatTime(change.time)), ' ',
        h('strong', {}, `${t(`change.${change.op}`)} · ${t(`section.${change.section}`)}`), ' ',
        h('span', { class: 'code' }, change.key), h('div', { class: 'muted' }, describeChange(change)))))
        : h('p', { class: 'muted' }, t('assets.no_changes')));
    } catch (problem) {
      if (!stopped) replace(history, h('p', { class: 'error' }, context.describeError(problem)));
    }
  }
  replace(main, h('p', {}, h('a', { href: '#/assets', id: 'back-to-assets' }, t('assets.back'))),
    h('h1', {}, t('assets.detail', { id })), error, body,
    section('asset-history-title', t('assets.history'), history));
  load();
  return () => { stopped = true; };
}

/** `#/assets` and `#/assets/ID`. */
export function render(main, context, id) {
  return id ? renderDetail(main, context, id) : renderList(main, context);
}
