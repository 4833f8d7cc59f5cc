// The console's shell: login, navigation, language switch, the live event stream, and a
// hash router (#/overview, #/network/CODE, #/orders, #/orders/ID, #/assets, #/assets/ID,
// #/security, #/security/ID, #/services, #/settings) that mounts one page at a time. A page
// is `render(container, context, argument, params)` returning a function that stops it.

import { h, replace } from './dom.js';
import { t, language, setLanguage } from './i18n.js';
import * as api from './api.js';
import * as overview from './pages/overview.js';
import * as network from './pages/network.js';
import * as orders from './pages/orders.js';
import * as assets from './pages/assets.js';
import * as security from './pages/security.js';
import * as services from './pages/services.js';
import * as settings from './pages/settings.js';

const root = document.getElementById('app');
const FEED_LENGTH = 50;

/** What every page shares: the event feed and listeners, and an error formatter. */
const context = {
  feed: [],
  listeners: new Set(),
  liveConnected: false,
  /** Subscribes to live events; returns the unsubscribe function. */
  onEvent(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  },
  describeError(error) {
    if (error.status === 403) return t('error.forbidden', { message: error.message });
    if (error.status === 0) return t('error.network', { message: error.message });
    return t('error.generic', { status: error.status, message: error.message });
  },
};

let stopPage = () => {};
let stopEvents = null;

/** `#/page/argument?key=value` → its parts. */
function route() {
  const [path, query] = (location.hash || '#/overview').slice(2).split('?');
  const parts = path.split('/');
  return {
    page: parts[0] || 'overview',
    argument: parts[1] ? decodeURIComponent(parts[1]) : null,
    params: new URLSearchParams(query || ''),
  };
}

function showLogin(message) {
  stopPage();
  stopPage = () => {};
  if (stopEvents) stopEvents.abort();
  stopEvents = null;
  const status = h('p', { id: 'login-error', class: 'error', role: 'alert' }, message || '');
  const name = h('input', { id: 'login-name', name: 'name', autocomplete: 'username', required: true });
  const password = h('input', {
    id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const totp = h('input', {
    id: 'login-totp', name: 'totp', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}',
  });
  const submit = h('button', { id: 'login-submit', type: 'submit', class: 'primary' }, t('login.submit'));
  const form = h('form', {
    class: 'login-form',
    'aria-labelledby': 'login-title',
    onsubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      status.textContent = '';
      try {
        await api.login(name.value.trim(), password.value, totp.value.trim());
        await api.loadSession();
        if (!location.hash || location.hash === '#/login') location.hash = '#/overview';
        showShell();
      } catch (error) {
        status.textContent = t('login.failed', { message: error.message });
        submit.disabled = false;
        password.focus();
      }
    },
  },
  h('h1', { id: 'login-title' }, t('app.title')),
  h('h2', {}, t('login.title')),
  h('label', { for: 'login-name' }, t('login.name')), name,
  h('label', { for: 'login-password' }, t('login.password')), password,
  h('label', { for: 'login-totp' }, t('login.totp')), totp,
  submit, status);
  replace(root, h('main', { id: 'main', class: 'login' }, languageButton(() => showLogin(status.textContent)), form));
  document.title = `${t('login.title')} · ${t('app.title')}`;
  name.focus();
}

function languageButton(rerender) {
  return h('button', {
    id: 'lang-switch',
    type: 'button',
    class: 'lang',
    lang: language() === 'zh' ? 'en' : 'zh',
    'aria-label': t('lang.switch.label'),
    onclick: () => {
      setLanguage(language() === 'zh' ? 'en' : 'zh');
      rerender();
    },
  }, t('lang.switch'));
}

function startEvents() {
  if (stopEvents) return;
  stopEvents = new AbortController();
  api.streamEvents((name, data) => {
    const event = { name, data, received: Date.now() };
    if (name === 'agent' || name === 'work_order') {
      context.feed.unshift(event);
      context.feed.length = Math.min(context.feed.length, FEED_LENGTH);
    }
    for (const listener of context.listeners) listener(event);
  }, (connected) => {
    context.liveConnected = connected;
    const badge = document.getElementById('live-status');
    if (badge) {
      badge.textContent = connected ? t('live.connected') : t('live.disconnected');
      badge.dataset.connected = String(connected);
    }
  }, stopEvents.signal);
}

function showShell() {
  const { page } = route();
  const navItem = (id, key) => h('li', {}, h('a', {
    href: `#/${id}`, id: `nav-${id}`, 'aria-current': page === id ? 'page' : false,
  }, t(key)));
  const main = h('main', { id: 'main', tabindex: '-1' });
  const live = h('span', {
    id: 'live-status', class: 'live', role: 'status', dataset: { connected: String(context.liveConnected) },
  }, context.liveConnected ? t('live.connected') : t('live.disconnected'));
  replace(root,
    h('a', { class: 'skip', href: '#main', onclick: (event) => { event.preventDefault(); main.focus(); } }, t('app.skip')),
    h('header', { class: 'topbar' },
      h('span', { class: 'brand' }, t('app.title')),
      h('nav', { 'aria-label': t('nav.label') }, h('ul', {},
        navItem('overview', 'nav.overview'), navItem('network', 'nav.network'), navItem('orders', 'nav.orders'),
        navItem('assets', 'nav.assets'), navItem('security', 'nav.security'), navItem('services', 'nav.services'),
        navItem('settings', 'nav.settings'))),
      h('span', { class: 'spacer' }),
      live,
      h('span', { id: 'user-name', class: 'user' }, t('user.signed_in', { name: api.userName() })),
      languageButton(showShell),
      h('button', {
        id: 'logout', type: 'button',
        onclick: () => { api.logout(); location.hash = '#/login'; showLogin(); },
      }, t('user.logout'))),
    main);
  startEvents();
  mountPage(main);
}

function mountPage(main) {
  stopPage();
  const { page, argument, params } = route();
  const pages = { overview, network, orders, assets, security, services, settings };
  const module = pages[page] || overview;
  document.title = `${t(`nav.${pages[page] ? page : 'overview'}`)} · ${t('app.title')}`;
  stopPage = module.render(main, context, argument, params) || (() => {});
}

api.onUnauthorized(() => {
  api.logout();
  showLogin();
});

window.addEventListener('hashchange', () => {
  if (!api.token()) {
    showLogin();
    return;
  }
  showShell();
  // A new page: move the keyboard and screen-reader position to its content.
  document.getElementById('main')?.focus();
});

// An expired token answers 401 while the session loads, which shows the login page instead.
if (api.token()) api.loadSession().then(() => { if (api.token()) showShell(); });
else showLogin();
