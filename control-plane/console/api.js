// The JSON API under /api/v1, with the bearer token kept for this tab only
// (sessionStorage: gone when the tab closes; never a cookie, never in a URL).

const KEY = 'graylane.token';

/** An API answer other than 2xx: `status`, the server's `message` and `details`. */
export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details || [];
  }
}

export function token() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage disabled: the token lives as long as this page instead.
  }
  memory = value;
}

let memory = '';

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  const bearer = token() || memory;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    // fetch throws on a network failure, and on a token a header cannot carry.
    throw new ApiError(0, `control plane unreachable (${e.message})`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const message = (json && json.error) || text.trim() || response.statusText;
    throw new ApiError(response.status, message, json && json.details);
  }
  return json;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);
export const put = (path, body) => call('PUT', path, body);

/** `?namespace=` for a namespaced call; nothing for `default`. */
export function ns(namespace) {
  return namespace && namespace !== 'default' ? `?namespace=${encodeURIComponent(namespace)}` : '';
}
