// 网络: one level of the division tree at a time — region → cities → counties → townships →
// villages → agents. Each node is a real button placed where the control plane put it
// (positions are computed on the server by level, the browser runs no layout), coloured by
// its worst state. The level reloads every few seconds and at once on an agent event, so a
// node turns red without a page reload.
//
// Two views of the same level (`?view=map`): the graph, where each node's link to its parent
// is coloured by the worst RTT/loss below it, and for the region and its cities a map
// (./map.js). Beside either, the board of ./board.js.

import { h, s, replace } from '../dom.js';
import { t, formatTime } from '../i18n.js';
import { get } from '../api.js';
import { hasMap, loadGeo, mapView } from './map.js';
import { boardView, rtt, loss } from './board.js';

const REFRESH_MS = 3000;

function place(element, x, y, width, height) {
  // CSSOM, not a style attribute: the Content-Security-Policy forbids inline styles.
  element.style.left = `${(x * 100) / width}%`;
  element.style.top = `${(y * 100) / height}%`;
  return element;
}

/** The path from the region; levels above the user's scope are shown, not linked. */
function breadcrumb(path, scope, mode) {
  const target = (division) => (mode === 'map' && hasMap(division)
    ? `#/network/${division.code}?view=map` : `#/network/${division.code}`);
  return h('nav', { 'aria-label': t('network.breadcrumb'), class: 'breadcrumb' },
    h('ol', { id: 'breadcrumb' }, path.map((division, index) => h('li', {},
      index === path.length - 1
        ? h('span', { 'aria-current': 'location', dataset: { code: division.code } }, division.name)
        : division.level < scope.level
          ? h('span', { class: 'muted', dataset: { code: division.code } }, division.name)
          : h('a', { href: target(division), dataset: { code: division.code } }, division.name)))));
}

/** The agent's details: the node's own, then the full view from /api/v1/agents/ID once read. */
function agentDetail(agent, full) {
  const row = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
  return h('section', { id: 'agent-detail', class: 'panel', 'aria-labelledby': 'agent-detail-title' },
    h('h2', { id: 'agent-detail-title' }, `${t('network.agent.detail')}: ${agent.hostname}`),
    h('dl', {},
      row(t('network.agent.id'), agent.id),
      row(t('network.agent.role'), t(`role.${agent.role}`)),
      row(t('overview.state'), t(`state.${agent.state}`)),
      row(t('network.agent.last_seen'), formatTime(agent.last_seen)),
      row(t('network.agent.rtt'), agent.rtt_ms == null ? '—' : `${agent.rtt_ms.toFixed(1)} ms`),
      row(t('board.loss'), loss(agent)),
      row(t('network.agent.uplink'), full ? full.uplink || '—' : '…'),
      row(t('network.agent.os'), full ? `${full.os} ${full.arch}` : '…'),
      row(t('network.agent.version'), full ? full.agent_version || '—' : '…')));
}

function legend() {
  return h('ul', { class: 'legend', 'aria-label': t('network.legend') },
    ['ok', 'warn', 'down', 'empty'].map((state) => h('li', {}, h('span', { class: `dot state-${state}` }), t(`state.${state}`))));
}

function linkLegend() {
  return h('ul', { class: 'legend', 'aria-label': t('network.link_legend') },
    h('li', {}, t('network.link_legend')),
    ['ok', 'warn', 'down', 'empty'].map((state) => h('li', {}, h('span', { class: `bar link-${state}` }), t(`link.${state}`))));
}

/** Graph or map: the switch above the level. */
function viewSwitch(data, mode) {
  const mapAvailable = hasMap(data.division);
  const link = (view, label) => h('a', {
    href: view === 'map' ? `#/network/${data.division.code}?view=map` : `#/network/${data.division.code}`,
    id: `view-${view}`,
    class: 'tab',
    'aria-current': mode === view ? 'page' : null,
  }, label);
  return h('nav', { class: 'tabs', 'aria-label': t('network.views') },
    link('graph', t('network.view.graph')),
    mapAvailable ? link('map', t('network.view.map')) : h('span', { class: 'tab muted', title: t('network.map.none') }, t('network.view.map')));
}

function renderLevel(container, data, selected, full, onSelect, mode, geo) {
  const { width, height } = data;
  const canvasItems = data.children.length ? data.children : data.agents;
  const lines = s('svg', {
    class: 'links', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', 'aria-hidden': 'true', focusable: 'false',
  }, canvasItems.map((item) => {
    const link = item.link || { state: item.link_state, rtt_ms: item.rtt_ms, loss_percent: item.loss_percent };
    return s('line', {
      x1: width / 2, y1: 0, x2: item.x, y2: item.y, class: `link link-${link.state}`,
      dataset: { linkOf: item.code || item.id, link: link.state },
    });
  }));
  const nodes = data.children.map((child) => place(h('a', {
    href: `#/network/${child.code}`,
    class: `node state-${child.state}`,
    dataset: {
      code: child.code, state: child.state, online: String(child.online), total: String(child.total), link: child.link.state,
    },
    title: t('network.link', { rtt: rtt(child.link), loss: loss(child.link) }),
    'aria-label': t('network.node', { name: child.name, online: child.online, total: child.total, state: t(`state.${child.state}`) }),
  }, h('span', { class: 'node-name' }, child.name), h('span', { class: 'node-count' }, `${child.online}/${child.total}`)),
  child.x, child.y, width, height));
  const agentButton = (agent) => h('button', {
    type: 'button',
    class: `node agent state-${agent.state}`,
    dataset: { agentId: agent.id, state: agent.state, hostname: agent.hostname },
    'aria-pressed': selected === agent.id ? 'true' : 'false',
    'aria-label': t('network.agent', { host: agent.hostname, state: t(`state.${agent.state}`) }),
    onclick: () => onSelect(agent.id),
  }, h('span', { class: 'node-name' }, agent.hostname), h('span', { class: 'node-count' }, t(`role.${agent.role}`)));
  const agentsOnCanvas = data.children.length === 0;
  const canvasNodes = agentsOnCanvas
    ? data.agents.map((agent) => place(agentButton(agent), agent.x, agent.y, width, height))
    : nodes;
  const chosen = data.agents.find((agent) => agent.id === selected);
  const showMap = mode === 'map' && hasMap(data.division);
  let picture;
  if (showMap) {
    picture = geo ? mapView(data, geo) : h('p', { class: 'muted' }, t('common.loading'));
  } else if (canvasNodes.length) {
    picture = h('div', {
      class: 'canvas', id: 'network-canvas', role: 'group', 'aria-label': t('network.canvas', { name: data.division.name }),
    }, lines, canvasNodes);
  } else {
    picture = h('p', { class: 'muted' }, agentsOnCanvas ? t('network.no_agents') : t('network.no_children'));
  }
  replace(container,
    viewSwitch(data, showMap ? 'map' : 'graph'),
    breadcrumb(data.path, data.scope, showMap ? 'map' : 'graph'),
    h('p', { class: 'summary' },
      h('span', { class: `state state-${data.summary.state}`, id: 'network-state', dataset: { state: data.summary.state } },
        t(`state.${data.summary.state}`)), ' ',
      t('network.summary', { online: data.summary.online, total: data.summary.total }), ' · ',
      t(`level.${data.division.level}`), ' · ',
      h('a', { href: `#/orders?division=${data.division.code}`, id: 'division-orders' }, t('network.orders'))),
    legend(),
    showMap ? null : linkLegend(),
    picture,
    !agentsOnCanvas && data.agents.length
      ? h('section', { 'aria-labelledby': 'agents-here' }, h('h2', { id: 'agents-here' }, t('network.agents')),
        h('div', { class: 'agent-row' }, data.agents.map(agentButton)))
      : null,
    chosen ? agentDetail(chosen, full) : null);
}

export function render(main, context, division, params) {
  const mode = params && params.get('view') === 'map' ? 'map' : 'graph';
  const body = h('div', { id: 'network-body' }, h('p', {}, t('common.loading')));
  const board = h('div', { id: 'network-side' });
  const error = h('p', { class: 'error', role: 'alert' });
  replace(main, h('h1', {}, t('network.title')), error, h('div', { class: 'network-layout' }, body, board));
  let geo = null;
  let stopped = false;
  let pending = null;
  let selected = null;
  let full = null;
  let last = null;
  let lastText = '';
  const path = division ? `/api/v1/network?division=${encodeURIComponent(division)}` : '/api/v1/network';
  function draw() {
    // Keep keyboard focus on the same node across a redraw.
    const focused = document.activeElement;
    const key = focused && (focused.dataset.code || focused.dataset.agentId);
    if (mode === 'map' && hasMap(last.division) && (!geo || geo.code !== last.division.code)) {
      const code = last.division.code;
      loadGeo(code).then((features) => {
        if (stopped || last.division.code !== code) return;
        geo = { code, features };
        draw();
      }, (problem) => {
        if (!stopped) error.textContent = context.describeError(problem);
      });
    }
    const shapes = geo && geo.code === last.division.code ? geo.features : null;
    renderLevel(body, last, selected, full && full.id === selected ? full : null, (id) => {
      selected = selected === id ? null : id;
      draw();
      if (selected) {
        get(`/api/v1/agents/${encodeURIComponent(selected)}`).then((view) => {
          full = view;
          if (!stopped && selected === view.id) draw();
        }, (problem) => {
          if (!stopped) error.textContent = context.describeError(problem);
        });
      }
    }, mode, shapes);
    if (key) {
      const again = body.querySelector(`[data-code="${CSS.escape(key)}"], [data-agent-id="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }
  async function load() {
    try {
      const data = await get(path);
      if (stopped) return;
      error.textContent = '';
      // The board's durations change on every load; it is redrawn each time, on its own.
      replace(board, boardView(data));
      // Redraw the level only on a change: a redraw replaces the nodes under the pointer.
      const text = JSON.stringify({ ...data, board: null });
      if (text === lastText) return;
      lastText = text;
      last = data;
      draw();
    } catch (problem) {
      if (!stopped) error.textContent = context.describeError(problem);
    }
  }
  load();
  const timer = setInterval(load, REFRESH_MS);
  const unsubscribe = context.onEvent((event) => {
    if (event.name !== 'agent' && event.name !== 'lagged') return;
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
