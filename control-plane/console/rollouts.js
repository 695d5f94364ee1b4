// Rollouts: each progressive lane release (LaneRollout) with its state, its step on a
// step bar, the time in step, the readings behind each verdict (lane vs base) and the
// timeline of decisions; pause and resume at once, promote and abort behind a confirm
// step (they end the rollout).

import { get, ns, post } from './api.js';
import { el } from './dom.js';
import { num, serviceName, time } from './format.js';

/** Verdicts shown per rollout, newest first: the store keeps 30. */
const VERDICTS = 10;
const OVER = ['Succeeded', 'RolledBack'];
const ACTIONS = {
  pause: { label: 'Pause', done: 'paused', when: ['Progressing'] },
  resume: { label: 'Resume', done: 'resumed', when: ['Paused'] },
  promote: { label: 'Promote', done: 'promoted', when: ['Progressing', 'Paused'], confirm: true,
    meaning: 'jump to the last step as if every step passed, then apply onSuccess' },
  abort: { label: 'Abort', done: 'aborted', when: ['Progressing', 'Paused'], confirm: true,
    meaning: "roll back now: the lane's share of users goes to 0%" },
};

async function load() {
  return { rollouts: (await get('/rollouts')) || [] };
}

function keyOf(r) {
  return `${r.namespace || 'default'}/${r.name}`;
}

async function act(ctx, rollout, action) {
  const { state } = ctx;
  const key = keyOf(rollout);
  state.confirm = null;
  state.busy = key;
  state.messages = state.messages || {};
  state.messages[key] = null;
  ctx.redraw();
  try {
    const path = `/rollouts/${encodeURIComponent(rollout.name)}:${action}${ns(rollout.namespace)}`;
    const after = await post(path);
    state.messages[key] = {
      text: `Rollout ${rollout.name} ${ACTIONS[action].done}: ${after.state}, step ${after.step}, ${num(after.percent)}%.`,
    };
  } catch (e) {
    if (ctx.unauthorized(e)) return;
    state.messages[key] = { error: `${ACTIONS[action].label} refused: ${e.message}` };
  } finally {
    state.busy = null;
  }
  ctx.redraw();
  ctx.refresh();
}

/** `1 min 30 s` since `at` (an RFC 3339 time); '' when unknown. */
function since(at) {
  const ms = Date.parse(at || '');
  if (!Number.isFinite(ms)) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function stepBar(r) {
  const over = OVER.includes(r.state);
  const segments = [];
  for (let i = 1; i <= r.steps; i += 1) {
    const kind = i < r.step || r.state === 'Succeeded' ? 'done' : i === r.step ? 'current' : 'todo';
    segments.push(el('span', { class: `seg ${kind}`, title: `step ${i} of ${r.steps}` }));
  }
  const where = r.step ? `step ${r.step} of ${r.steps}` : `not started (${r.steps} steps)`;
  const held = !over && since(r.stepStartedAt);
  return el('div', { class: 'stepbar' },
    el('div', { class: 'segs', role: 'img', 'aria-label': where }, segments),
    el('div', { class: 'step-text' },
      el('strong', { class: 'percent' }, `${num(r.percent)}%`), ' of users in the lane · ', where,
      held ? ` · in step for ${held}` : ''));
}

function buttons(ctx, r) {
  const key = keyOf(r);
  const { state } = ctx;
  const busy = Boolean(state.busy);
  const usable = Object.entries(ACTIONS).filter(([, a]) => a.when.includes(r.state));
  if (!usable.length) return null;
  if (state.confirm && state.confirm.key === key) {
    const a = ACTIONS[state.confirm.action];
    return el('div', { class: 'actions' },
      el('span', { class: 'muted' }, `${a.label}: ${a.meaning}?`),
      el('button', { type: 'button', class: 'danger', disabled: busy,
        onclick: () => act(ctx, r, state.confirm.action) }, `Confirm ${a.label.toLowerCase()}`),
      el('button', { type: 'button', onclick: () => { state.confirm = null; ctx.redraw(); } }, 'Cancel'));
  }
  return el('div', { class: 'actions' }, usable.map(([action, a]) => el('button', {
    type: 'button',
    disabled: busy,
    title: a.meaning || '',
    onclick: a.confirm
      ? () => { state.confirm = { key, action }; ctx.redraw(); }
      : () => act(ctx, r, action),
  }, a.label)));
}

function pct(rate) {
  return Number.isFinite(rate) ? `${num(rate * 100)}%` : '–';
}

function ms(p99) {
  return p99 === null || p99 === undefined ? '–' : `${num(p99)} ms`;
}

function verdicts(r) {
  const list = (r.verdicts || []).slice(-VERDICTS).reverse();
  if (!list.length) return el('p', { class: 'muted small' }, 'No verdict yet: one per analysis interval.');
  const side = (s) => [el('td', { class: 'num' }, String(s.requests)),
    el('td', { class: 'num' }, pct(s.errorRate)), el('td', { class: 'num' }, ms(s.p99Ms))];
  return el('div', { class: 'scroll' }, el('table', { class: 'verdicts' },
    el('thead', {},
      el('tr', {}, el('th', { rowspan: 2 }, 'At'), el('th', { rowspan: 2 }, 'Verdict'),
        el('th', { colspan: 3 }, 'Lane'), el('th', { colspan: 3 }, 'Base'), el('th', { rowspan: 2 }, 'Why')),
      el('tr', {}, ['requests', 'errors', 'p99', 'requests', 'errors', 'p99'].map((h) => el('th', {}, h)))),
    el('tbody', {}, list.map((v) => el('tr', { 'data-key': v.at },
      el('td', { class: 'nowrap' }, new Date(v.at).toLocaleTimeString()),
      el('td', {}, el('span', { class: `verdict verdict-${v.verdict}` }, v.verdict)),
      side(v.lane), side(v.base),
      el('td', { class: 'wrap' }, v.reason))))));
}

function timeline(r) {
  const list = [...(r.decisions || [])].reverse();
  return el('ol', { class: 'timeline' }, list.map((d, i) => el('li', { 'data-key': `${d.at}-${list.length - i}` },
    el('time', { datetime: d.at }, time(Date.parse(d.at))), ' ', el('span', {}, d.what))));
}

function card(ctx, r) {
  const key = keyOf(r);
  const message = (ctx.state.messages || {})[key];
  return el('section', { class: 'card rollout', 'data-key': key },
    el('div', { class: 'rev-head' },
      el('h2', { class: 'mono' }, serviceName(r.name, r.namespace)),
      el('span', { class: 'chip' }, `lane ${r.lane}`),
      el('span', { class: `state rollout-${r.state}` }, r.state)),
    stepBar(r),
    r.reason ? el('p', { class: 'error' }, `Rolled back: ${r.reason}`) : null,
    message ? el('p', { class: `banner ${message.error ? 'error' : 'ok'}`, role: 'status' },
      message.error || message.text) : null,
    buttons(ctx, r),
    el('h3', {}, 'Verdicts (newest first)'),
    verdicts(r),
    el('h3', {}, 'Timeline (newest first)'),
    timeline(r));
}

function render(ctx) {
  const { rollouts } = ctx.data;
  if (!rollouts.length) {
    return [el('p', { class: 'empty' }, 'No rollout: apply a LaneRollout to release a lane step by step.')];
  }
  return rollouts.map((r) => card(ctx, r));
}

export default { title: 'Rollouts', load, render };
