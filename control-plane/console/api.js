// The control plane's API as the console uses it: the login token lives in sessionStorage
// (gone when the tab closes) and goes out as `Authorization: Bearer` on every call, the
// event stream included (read with fetch, since EventSource cannot send headers).

const TOKEN_KEY = 'bagui.token';
const USER_KEY = 'bagui.user';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = () => {};

/** Called when the API answers 401 (an expired or revoked token). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function userName() {
  return sessionStorage.getItem(USER_KEY) || '';
}

function headers(extra) {
  const result = { Accept: 'application/json', ...extra };
  const current = token();
  if (current) result.Authorization = `Bearer ${current}`;
  return result;
}

/** One API call; resolves to the JSON answer, rejects with an ApiError. */
export async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, error.message);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = (data && data.error) || text || response.statusText;
    if (response.status === 401 && path !== '/api/v1/login') unauthorized();
    throw new ApiError(response.status, message);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

const PERMISSIONS_KEY = 'bagui.permissions';
const SCOPE_KEY = 'bagui.scope';

/**
 * What the signed-in user's roles grant, as the overview reported it; `null` while unknown
 * (then every action is offered and the API's refusal is shown).
 */
export function permissions() {
  const stored = sessionStorage.getItem(PERMISSIONS_KEY);
  return stored ? JSON.parse(stored) : null;
}

/** Whether the user may do `permission`: true while the permissions are unknown. */
export function may(permission) {
  const known = permissions();
  return known === null || known.includes(permission);
}

/** The division code of the user's scope, once known. */
export function scope() {
  return sessionStorage.getItem(SCOPE_KEY);
}

/** Asks the control plane once per session what the user may do and where. */
export async function loadSession() {
  if (permissions() !== null) return;
  try {
    const overview = await get('/api/v1/overview');
    sessionStorage.setItem(PERMISSIONS_KEY, JSON.stringify(overview.permissions || []));
    sessionStorage.setItem(SCOPE_KEY, overview.scope.code);
  } catch {
    // A user without view_assets (e.g. the security administrator): the pages ask the API
    // and show its refusals.
  }
}

export async function login(name, password, totp) {
  const issued = await post('/api/v1/login', { name, password, totp: totp || null });
  sessionStorage.setItem(TOKEN_KEY, issued.token);
  sessionStorage.setItem(USER_KEY, issued.user || name);
  return issued;
}

export function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  sessionStorage.removeItem(PERMISSIONS_KEY);
  sessionStorage.removeItem(SCOPE_KEY);
}

/**
 * Reads `/api/v1/events` until `signal` aborts, reconnecting after a pause when the stream
 * ends. `onEvent(name, data)` gets each event; `onStatus(connected)` the link's state.
 */
export async function streamEvents(onEvent, onStatus, signal) {
  while (!signal.aborted) {
    try {
      const response = await fetch('/api/v1/events', {
        headers: headers({ Accept: 'text/event-stream' }),
        cache: 'no-store',
        signal,
      });
      if (response.status === 401) {
        unauthorized();
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      onStatus(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
          }
          if (data.length === 0) continue;
          let parsed;
          try {
            parsed = JSON.parse(data.join('\n'));
          } catch {
            parsed = data.join('\n');
          }
          onEvent(name, parsed);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    onStatus(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}
