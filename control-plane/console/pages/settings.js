// 设置: join tokens (list, create and show the join command once, copy it, revoke), teams with
// their notification channels (list; create, replace and remove as JSON), users (list, create,
// remove), the incident rules (JSON, validated by the API) and maintenance windows (list,
// create, end or delete).
//
// Each section loads on its own, so a role that may see one and not another still gets a
// page: a refusal shows as the API's message in that section. The forms are only offered to
// roles whose permissions grant them (as the overview reported them); the API decides anyway.

import { h, replace } from '../dom.js';
import { t, formatTime } from '../i18n.js';
import { get, post, put, del, may, scope } from '../api.js';
import { table, section } from '../ui.js';

const ROLES = ['operator', 'security_analyst', 'viewer', 'system_admin', 'security_admin', 'audit_admin'];
const AGENT_ROLES = ['server', 'gateway', 'terminal'];

/** A status line for a section's own messages. */
function messages() {
  return {
    error: h('p', { class: 'error', role: 'alert' }),
    notice: h('p', { class: 'notice', role: 'status' }),
    clear() {
      this.error.textContent = '';
      this.notice.textContent = '';
    },
  };
}

function field(id, label, input) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}

/** A channel as the list shows it: its kind and host, never the URL's secret query. */
function channelLabel(channel) {
  const url = channel.url || '';
  const host = url.replace(/^[a-z]+:\/\//, '').split(/[/?#]/)[0];
  return host ? `${channel.type} · ${host}` : channel.type;
}

/** Copies `text`; a browser that refuses the clipboard leaves it selected for Ctrl+C. */
async function copy(text, area, status) {
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = t('settings.copied');
  } catch {
    area.focus();
    area.select();
    status.textContent = t('settings.copy.manual');
  }
}

/** The action of a remove or revoke button: DELETE `path`, say `done`, reload the list. */
function deleteAction(context, status, path, done, load) {
  return async () => {
    status.clear();
    try {
      await del(path);
      status.notice.textContent = done;
      load();
    } catch (problem) {
      status.error.textContent = context.describeError(problem);
    }
  };
}

function tokensSection(context) {
  const status = messages();
  const list = h('div', { id: 'tokens-list' }, h('p', {}, t('common.loading')));
  const created = h('div', { id: 'token-created', 'aria-live': 'polite' });
  let stopped = false;
  async function load() {
    try {
      const tokens = await get('/api/v1/tokens');
      if (stopped) return;
      tokens.sort((a, b) => b.created.localeCompare(a.created));
      replace(list, table({ id: 'tokens-table' }, null,
        [t('settings.token.id'), t('assets.division'), t('assets.role'), t('settings.token.state'), t('settings.token.uses'),
          t('settings.token.expires'), t('settings.description'), t('settings.actions')],
        tokens.map((token) => h('tr', { dataset: { tokenId: token.id, state: token.state } },
          h('th', { scope: 'row', class: 'code' }, token.id),
          h('td', {}, token.division_path),
          h('td', {}, t(`role.${token.role}`)),
          h('td', {}, t(`token.${token.state}`)),
          h('td', {}, `${token.uses}/${token.max_uses}`),
          h('td', {}, formatTime(token.expires)),
          h('td', {}, token.description || '—'),
          h('td', {}, token.state === 'valid' ? confirmButton(t('settings.revoke'),
            t('settings.token.revoke.label', { id: token.id }), deleteAction(context, status, `/api/v1/tokens/${encodeURIComponent(token.id)}`, t('settings.token.revoked', { id: token.id }), load)) : '—')))));
    } catch (problem) {
      if (!stopped) replace(list, h('p', { class: 'error', role: 'alert' }, context.describeError(problem)));
    }
  }
  const division = h('input', {
    id: 'token-division', name: 'division', required: true, inputmode: 'numeric', pattern: '[0-9]+', value: scope() || '',
  });
  const role = h('select', { id: 'token-role', name: 'role' }, AGENT_ROLES.map((name) => h('option', { value: name }, t(`role.${name}`))));
  const ttl = h('input', { id: 'token-ttl', name: 'ttl', value: '24h', size: 6 });
  const uses = h('input', { id: 'token-uses', name: 'uses', type: 'number', min: 1, value: 1 });
  const description = h('input', { id: 'token-description', name: 'description' });
  const form = h('form', {
    id: 'token-form', class: 'inline-form', 'aria-label': t('settings.token.create'),
    onsubmit: async (event) => {
      event.preventDefault();
      status.clear();
      try {
        const answer = await post('/api/v1/tokens', {
          division: division.value.trim(), role: role.value, ttl: ttl.value.trim(), uses: Number(uses.value), description: description.value.trim(),
        });
        const command = h('textarea', { id: 'join-command', readonly: true, rows: 3, 'aria-label': t('settings.join_command') }, answer.join_command);
        const copied = h('span', { id: 'join-copied', role: 'status', class: 'notice' });
        replace(created, h('div', { class: 'created' },
          h('p', {}, t('settings.token.created', { id: answer.id, path: answer.division_path })),
          h('label', { for: 'join-command' }, t('settings.join_command')), command,
          h('div', { class: 'buttons' }, h('button', {
            type: 'button', id: 'join-copy', class: 'primary', onclick: () => copy(answer.join_command, command, copied),
          }, t('settings.copy')), copied),
          h('p', { class: 'muted' }, t('settings.token.once'))));
        command.focus();
        load();
      } catch (problem) {
        status.error.textContent = context.describeError(problem);
      }
    },
  },
  field('token-division', t('settings.division_code'), division), field('token-role', t('assets.role'), role),
  field('token-ttl', t('settings.token.ttl'), ttl), field('token-uses', t('settings.token.max_uses'), uses),
  field('token-description', t('settings.description'), description),
  h('button', { type: 'submit', id: 'token-create', class: 'primary' }, t('settings.token.create')));
  load();
  return {
    element: section('settings-tokens', t('settings.tokens'), form, status.error, status.notice, created, list),
    stop: () => { stopped = true; },
  };
}

/** A JSON text area (the API validates what is sent). */
function jsonEditor(id, label, rows) {
  return h('textarea', { id, rows, spellcheck: 'false', class: 'json', 'aria-label': label });
}

/**
 * A button that asks once more before a destructive `action`: the first press turns it into
 * "confirm", the second acts (no modal dialog, so keyboard and screen readers stay in place).
 */
function confirmButton(label, accessibleName, action) {
  const button = h('button', {
    type: 'button', class: 'danger', 'aria-label': accessibleName,
    onclick: () => {
      if (button.dataset.armed !== 'true') {
        button.dataset.armed = 'true';
        button.textContent = t('settings.confirm');
        setTimeout(() => {
          button.dataset.armed = 'false';
          button.textContent = label;
        }, 5000);
        return;
      }
      button.disabled = true;
      action().finally(() => { button.disabled = false; });
    },
  }, label);
  return button;
}

function teamsSection(context) {
  const status = messages();
  const list = h('div', { id: 'teams-list' }, h('p', {}, t('common.loading')));
  const manage = may('manage_teams');
  const editor = jsonEditor('team-json', t('settings.team.json'), 12);
  const template = {
    id: '', name: '', division: scope() || '', categories: ['host', 'network'],
    channels: [{ type: 'webhook', url: '' }], on_duty: [],
  };
  editor.value = JSON.stringify(template, null, 2);
  let stopped = false;
  async function load() {
    try {
      const teams = await get('/api/v1/teams');
      if (stopped) return;
      teams.sort((a, b) => a.division.localeCompare(b.division) || a.id.localeCompare(b.id));
      replace(list, table({ id: 'teams-table' }, null,
        [t('settings.team.id'), t('settings.team.name'), t('assets.division'), t('settings.team.categories'),
          t('settings.team.channels'), t('settings.team.on_duty'), manage ? t('settings.actions') : null].filter(Boolean),
        teams.map((team) => h('tr', { dataset: { teamId: team.id } },
          h('th', { scope: 'row', class: 'code' }, team.id),
          h('td', {}, team.name),
          h('td', {}, team.division),
          h('td', {}, team.categories.length ? team.categories.map((name) => t(`category.${name}`)).join('、') : t('settings.team.all')),
          h('td', {}, team.channels.length ? h('ul', { class: 'plain' }, team.channels.map((channel) => h('li', {}, channelLabel(channel)))) : '—'),
          h('td', {}, team.on_duty.map((person) => person.name).join('、') || (team.roster ? t('settings.team.roster') : '—')),
          manage ? h('td', { class: 'buttons' },
            h('button', {
              type: 'button', 'aria-label': t('settings.edit.label', { id: team.id }),
              onclick: () => {
                const { created_ms: _created, ...editable } = team;
                editor.value = JSON.stringify(editable, null, 2);
                editor.focus();
              },
            }, t('settings.edit')),
            confirmButton(t('settings.remove'), t('settings.remove.label', { id: team.id }), deleteAction(context, status, `/api/v1/teams/${encodeURIComponent(team.id)}`, t('settings.removed', { id: team.id }), load))) : null))));
    } catch (problem) {
      if (!stopped) replace(list, h('p', { class: 'error', role: 'alert' }, context.describeError(problem)));
    }
  }
  const form = manage ? h('form', {
    id: 'team-form', 'aria-label': t('settings.team.save'),
    onsubmit: async (event) => {
      event.preventDefault();
      status.clear();
      let team;
      try {
        team = JSON.parse(editor.value);
      } catch (problem) {
        status.error.textContent = t('settings.json.invalid', { message: problem.message });
        return;
      }
      try {
        const saved = await post('/api/v1/teams', team);
        status.notice.textContent = t('settings.saved', { id: saved.id });
        load();
      } catch (problem) {
        status.error.textContent = context.describeError(problem);
      }
    },
  }, h('label', { for: 'team-json' }, t('settings.team.json')), editor,
  h('p', { class: 'muted small' }, t('settings.team.help')),
  h('button', { type: 'submit', id: 'team-save', class: 'primary' }, t('settings.team.save'))) : null;
  load();
  return {
    element: section('settings-teams', t('settings.teams'), list, status.error, status.notice, form),
    stop: () => { stopped = true; },
  };
}

function usersSection(context) {
  const status = messages();
  const list = h('div', { id: 'users-list' }, h('p', {}, t('common.loading')));
  let stopped = false;
  async function load() {
    try {
      const users = await get('/api/v1/users');
      if (stopped) return;
      users.sort((a, b) => a.name.localeCompare(b.name));
      replace(list, table({ id: 'users-table' }, null,
        [t('settings.user.name'), t('settings.user.roles'), t('settings.user.scope'), t('settings.user.teams'),
          t('settings.user.state'), t('settings.actions')],
        users.map((user) => h('tr', { dataset: { user: user.name } },
          h('th', { scope: 'row' }, user.name),
          h('td', {}, user.roles.map((name) => t(`userrole.${name}`)).join('、')),
          h('td', {}, user.scope_path || user.scope),
          h('td', {}, user.teams.join('、') || '—'),
          h('td', {}, [
            user.disabled ? t('settings.user.disabled') : null,
            user.locked_until ? t('settings.user.locked', { until: formatTime(user.locked_until) }) : null,
            user.has_password ? null : t('settings.user.no_password'),
            user.totp_enrolled ? t('settings.user.totp') : null,
          ].filter(Boolean).join('；') || t('settings.user.active')),
          h('td', {}, confirmButton(t('settings.remove'), t('settings.remove.label', { id: user.name }), deleteAction(context, status, `/api/v1/users/${encodeURIComponent(user.name)}`, t('settings.removed', { id: user.name }), load)))))));
    } catch (problem) {
      if (!stopped) replace(list, h('p', { class: 'error', role: 'alert' }, context.describeError(problem)));
    }
  }
  const name = h('input', { id: 'user-name', name: 'name', required: true, autocomplete: 'off' });
  const userScope = h('input', { id: 'user-scope', name: 'scope', required: true, inputmode: 'numeric', value: scope() || '' });
  const password = h('input', { id: 'user-password', name: 'password', type: 'password', autocomplete: 'new-password' });
  const teams = h('input', { id: 'user-teams', name: 'teams', placeholder: t('settings.user.teams.placeholder') });
  const roleBoxes = ROLES.map((role) => h('input', { type: 'checkbox', name: 'roles', value: role, id: `user-role-${role}` }));
  const form = h('form', {
    id: 'user-form', class: 'inline-form', 'aria-label': t('settings.user.create'),
    onsubmit: async (event) => {
      event.preventDefault();
      status.clear();
      try {
        await post('/api/v1/users', {
          name: name.value.trim(),
          roles: roleBoxes.filter((box) => box.checked).map((box) => box.value),
          scope: userScope.value.trim(),
          teams: teams.value.split(/[,，\s]+/).filter(Boolean),
          password: password.value || null,
        });
        status.notice.textContent = t('settings.saved', { id: name.value.trim() });
        password.value = '';
        load();
      } catch (problem) {
        status.error.textContent = context.describeError(problem);
      }
    },
  },
  field('user-name', t('settings.user.name'), name), field('user-scope', t('settings.user.scope'), userScope),
  field('user-password', t('settings.user.password'), password), field('user-teams', t('settings.user.teams'), teams),
  h('fieldset', { class: 'roles' }, h('legend', {}, t('settings.user.roles')),
    roleBoxes.map((box) => h('label', { class: 'check' }, box, t(`userrole.${box.value}`)))),
  h('button', { type: 'submit', id: 'user-create', class: 'primary' }, t('settings.user.create')));
  load();
  return {
    element: section('settings-users', t('settings.users'), form, status.error, status.notice, list),
    stop: () => { stopped = true; },
  };
}

function rulesSection(context) {
  const status = messages();
  const editor = jsonEditor('rules-json', t('settings.rules'), 16);
  const body = h('div', { id: 'rules-body' }, h('p', {}, t('common.loading')));
  let stopped = false;
  async function load() {
    try {
      const rules = await get('/api/v1/incident-rules');
      if (stopped) return;
      editor.value = JSON.stringify(rules, null, 2);
      replace(body, h('form', {
        id: 'rules-form', 'aria-label': t('settings.rules.save'),
        onsubmit: async (event) => {
          event.preventDefault();
          status.clear();
          let value;
          try {
            value = JSON.parse(editor.value);
          } catch (problem) {
            status.error.textContent = t('settings.json.invalid', { message: problem.message });
            editor.focus();
            return;
          }
          try {
            const saved = await put('/api/v1/incident-rules', value);
            editor.value = JSON.stringify(saved, null, 2);
            status.notice.textContent = t('settings.rules.saved');
          } catch (problem) {
            status.error.textContent = context.describeError(problem);
            editor.focus();
          }
        },
      }, h('label', { for: 'rules-json' }, t('settings.rules.json')), editor,
      h('div', { class: 'buttons' },
        h('button', { type: 'submit', id: 'rules-save', class: 'primary' }, t('settings.rules.save')),
        h('button', { type: 'button', id: 'rules-reload', onclick: () => { status.clear(); load(); } }, t('settings.reload')))));
    } catch (problem) {
      if (!stopped) replace(body, h('p', { class: 'error', role: 'alert' }, context.describeError(problem)));
    }
  }
  load();
  return {
    element: section('settings-rules', t('settings.rules'), status.error, status.notice, body),
    stop: () => { stopped = true; },
  };
}

function maintenanceSection(context) {
  const status = messages();
  const list = h('div', { id: 'maintenance-list' }, h('p', {}, t('common.loading')));
  const manage = may('manage_channels_and_rules');
  let stopped = false;
  async function load() {
    try {
      const windows = await get('/api/v1/maintenance');
      if (stopped) return;
      windows.sort((a, b) => a.start_ms - b.start_ms);
      replace(list, table({ id: 'maintenance-table' }, null,
        [t('settings.maintenance.target'), t('settings.maintenance.start'), t('settings.maintenance.end'),
          t('settings.maintenance.state'), t('settings.maintenance.reason'), t('settings.maintenance.by'),
          manage ? t('settings.actions') : null].filter(Boolean),
        windows.map((entry) => h('tr', { dataset: { windowId: entry.id } },
          h('th', { scope: 'row' }, `${t(`target.${entry.target_kind}`)} ${entry.target}`),
          h('td', {}, formatTime(entry.start)),
          h('td', {}, formatTime(entry.end)),
          h('td', {}, t(entry.active ? 'settings.maintenance.active' : 'settings.maintenance.planned')),
          h('td', {}, entry.reason),
          h('td', {}, entry.created_by),
          manage ? h('td', {}, confirmButton(t(entry.active ? 'settings.maintenance.end_now' : 'settings.remove'),
            t('settings.remove.label', { id: entry.id }), deleteAction(context, status, `/api/v1/maintenance/${encodeURIComponent(entry.id)}`, t('settings.removed', { id: entry.id }), load))) : null))));
    } catch (problem) {
      if (!stopped) replace(list, h('p', { class: 'error', role: 'alert' }, context.describeError(problem)));
    }
  }
  const kind = h('select', { id: 'maintenance-kind', name: 'kind' },
    h('option', { value: 'division' }, t('target.division')), h('option', { value: 'agent' }, t('target.agent')));
  const target = h('input', { id: 'maintenance-target', name: 'target', required: true, value: scope() || '' });
  const length = h('input', { id: 'maintenance-duration', name: 'duration', value: '2h', size: 6 });
  const reason = h('input', { id: 'maintenance-reason', name: 'reason', required: true });
  const form = manage ? h('form', {
    id: 'maintenance-form', class: 'inline-form', 'aria-label': t('settings.maintenance.create'),
    onsubmit: async (event) => {
      event.preventDefault();
      status.clear();
      try {
        await post('/api/v1/maintenance', {
          [kind.value]: target.value.trim(), duration: length.value.trim(), reason: reason.value.trim(),
        });
        status.notice.textContent = t('settings.maintenance.created');
        load();
      } catch (problem) {
        status.error.textContent = context.describeError(problem);
      }
    },
  },
  field('maintenance-kind', t('settings.maintenance.kind'), kind), field('maintenance-target', t('settings.maintenance.target'), target),
  field('maintenance-duration', t('settings.maintenance.duration'), length), field('maintenance-reason', t('settings.maintenance.reason'), reason),
  h('button', { type: 'submit', id: 'maintenance-create', class: 'primary' }, t('settings.maintenance.create'))) : null;
  load();
  return {
    element: section('settings-maintenance', t('settings.maintenance'), form, status.error, status.notice, list),
    stop: () => { stopped = true; },
  };
}

export function render(main, context) {
  // The sections a role may use; with unknown permissions all of them, each showing the
  // API's answer.
  const parts = [
    may('manage_tokens_and_agents') ? tokensSection(context) : null,
    may('view_work_orders') || may('manage_teams') ? teamsSection(context) : null,
    may('manage_users') ? usersSection(context) : null,
    may('manage_channels_and_rules') ? rulesSection(context) : null,
    may('view_work_orders') || may('manage_channels_and_rules') ? maintenanceSection(context) : null,
  ].filter(Boolean);
  const nav = h('nav', { class: 'toc', 'aria-label': t('settings.sections') }, h('ul', {},
    parts.map((part) => {
      const heading = part.element.querySelector('h2');
      return h('li', {}, h('a', {
        href: '#/settings',
        onclick: (event) => {
          event.preventDefault();
          heading.scrollIntoView();
          heading.setAttribute('tabindex', '-1');
          heading.focus();
        },
      }, heading.textContent));
    })));
  replace(main, h('h1', {}, t('settings.title')),
    parts.length ? [nav, parts.map((part) => part.element)] : h('p', { id: 'settings-none', class: 'muted' }, t('settings.nothing')));
  return () => parts.forEach((part) => part.stop());
}
