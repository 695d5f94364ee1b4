// The console's shell: hash routes, one view at a time, polled every 2 s while it is
// open, and the token form whenever the API answers 401.
//
//   hashchange ─► start(view) ─► poll: view.load() ─► draw: morph(#main, view.render())
//                                   └─ 401 ─► sign-in form (polling waits for a token)

import * as api from './api.js';
import { el, morph } from './dom.js';
import lanes from './lanes.js';
import releases from './releases.js';
import rollouts from './rollouts.js';
import rules from './rules.js';
import sidecars from './sidecars.js';
import traces from './traces.js';

const VIEWS = { lanes, releases, rollouts, rules, sidecars, traces };
const POLL_MS = 2000;

const main = document.getElementById('main');
const status = document.getElementById('status');
/** Per-view UI state (open diffs, a selected trace) that survives polls and visits. */
const states = {};
let active = null;
let signIn = null;

function start() {
  let name = (location.hash.match(/^#\/([a-z]+)$/) || [])[1];
  if (!Object.hasOwn(VIEWS, name || '')) {
    name = 'lanes';
    // Its hashchange then finds this view already open.
    location.replace('#/lanes');
  }
  if (active && active.name === name) return undefined;
  if (active) clearTimeout(active.timer);
  active = { name, view: VIEWS[name], data: null, error: null, seq: 0, timer: 0 };
  for (const link of document.querySelectorAll('nav.side a[data-view]')) {
    if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${active.view.title} · graylane`;
  main.replaceChildren();
  draw();
  return poll();
}

async function poll() {
  const run = active;
  clearTimeout(run.timer);
  if (document.hidden || signIn) return;
  const seq = ++run.seq;
  try {
    const data = await run.view.load(context(run));
    if (run !== active || seq !== run.seq) return;
    run.data = data;
    run.error = null;
    run.updated = new Date();
  } catch (e) {
    if (run !== active || seq !== run.seq) return;
    if (e.status === 401) return needToken(e);
    run.error = e;
  }
  draw();
  run.timer = setTimeout(poll, POLL_MS);
}

function needToken(e) {
  // A stored token that is refused is dropped: the form says why.
  signIn = { message: api.token() ? e.message : '' };
  api.setToken('');
  draw();
}

function context(run) {
  states[run.name] = states[run.name] || {};
  return {
    data: run.data,
    state: states[run.name],
    redraw: () => run === active && draw(),
    refresh: () => run === active && poll(),
    /** An action's failure: 401 asks for a token, anything else is the view's to show. */
    unauthorized: (e) => e && e.status === 401 && (needToken(e), true),
  };
}

function draw() {
  const run = active;
  const children = [el('h1', {}, run.view.title)];
  if (signIn) {
    children.push(tokenForm());
  } else {
    if (run.error) {
      children.push(el('p', { class: 'banner error', role: 'alert' },
        `Could not refresh: ${run.error.message}${run.data ? ' (showing the last answer)' : ''}`));
    }
    if (run.data) children.push(...run.view.render(context(run)));
    else if (!run.error) children.push(el('p', { class: 'muted' }, 'Loading…'));
  }
  morph(main, el('main', { id: 'main' }, children));
  drawStatus(run);
}

function drawStatus(run) {
  const ok = !run.error && run.updated;
  const state = signIn ? 'Sign-in needed' : run.error ? 'Not refreshing' : ok
    ? `Live · ${run.updated.toLocaleTimeString()}` : 'Connecting…';
  morph(status, el('div', { class: 'status', id: 'status', 'aria-live': 'polite' },
    el('span', { class: `dot ${ok ? 'ok' : run.error || signIn ? 'bad' : 'wait'}` }),
    el('span', {}, state),
    api.token() && el('button', { class: 'link', type: 'button', onclick: signOut }, 'Sign out')));
}

function signOut() {
  api.setToken('');
  signIn = { message: '' };
  draw();
}

function tokenForm() {
  const submit = (event) => {
    event.preventDefault();
    const value = event.currentTarget.querySelector('#token').value.trim();
    if (!value) return;
    // A header carries visible ASCII only: anything else would make fetch fail before
    // sending, with no 401 to bring this form back. Said here instead.
    if (!/^[\x21-\x7e]+$/.test(value)) {
      // Emptied, as after any refused password: the next attempt starts clean.
      event.currentTarget.querySelector('#token').value = '';
      signIn = { message: 'a token is visible ASCII only (letters, digits, punctuation); this one has other characters' };
      draw();
      return;
    }
    api.setToken(value);
    signIn = null;
    draw();
    poll();
  };
  return el('form', { class: 'card signin', onsubmit: submit, autocomplete: 'off' },
    el('p', {}, 'This control plane requires a token (one of its --token-file entries). ',
      'It is kept in this browser tab only and sent as Authorization: Bearer.'),
    signIn.message && el('p', { class: 'error', role: 'alert' }, `Refused: ${signIn.message}`),
    el('label', { for: 'token' }, 'Token'),
    el('div', { class: 'row' },
      el('input', { id: 'token', name: 'token', type: 'password', required: true, spellcheck: 'false' }),
      el('button', { type: 'submit', class: 'primary' }, 'Sign in')));
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && active) poll();
});
window.addEventListener('hashchange', start);
start();
