// Releases: each service's release state and the switch (gray / prod / all); after a
// switch the row follows the new revision until every sidecar has acked it.

import { get, ns, put } from './api.js';
import { el } from './dom.js';
import { serviceName } from './format.js';

const STATES = ['gray', 'prod', 'all'];
const MEANING = {
  gray: 'only lane instances serve, tagged or not',
  prod: 'only base instances serve; tagged requests fall back to base',
  all: 'every ready instance may serve (the route policy weights apply)',
};

async function load() {
  const [releases, sidecars] = await Promise.all([get('/releases'), get('/sidecars')]);
  return { releases: releases || [], sidecars: sidecars || [] };
}

async function switchTo(ctx, release, target) {
  const key = keyOf(release);
  const { state } = ctx;
  state.results = state.results || {};
  state.busy = key;
  state.results[key] = null;
  ctx.redraw();
  try {
    const path = `/releases/${encodeURIComponent(release.service)}${ns(release.namespace)}`;
    const outcome = await put(path, { state: target });
    state.results[key] = { revision: outcome.revision, target };
  } catch (e) {
    if (ctx.unauthorized(e)) return;
    state.results[key] = { error: e.message, details: e.details };
  } finally {
    state.busy = null;
  }
  ctx.redraw();
  ctx.refresh();
}

function keyOf(release) {
  return `${release.namespace || 'default'}/${release.service}`;
}

function acks(result, sidecars) {
  if (!result) return null;
  if (result.error) {
    return el('div', { class: 'error', role: 'alert' }, result.error,
      (result.details || []).map((d) => el('div', { class: 'small' }, String(d))));
  }
  const n = result.revision;
  const acked = sidecars.filter((s) => Number(s.ackedRevision) >= n).length;
  const nacked = sidecars.filter((s) => s.nack && Number(s.nack.revision) >= n).length;
  const done = acked === sidecars.length;
  return el('div', { class: 'ack' },
    el('span', { class: `dot ${nacked ? 'bad' : done ? 'ok' : 'wait'}` }),
    el('span', {}, `revision ${n}: acked by ${acked} of ${sidecars.length} sidecars`),
    nacked ? el('span', { class: 'error' }, ` · ${nacked} NACK`) : null);
}

function row(ctx, release) {
  const key = keyOf(release);
  const busy = ctx.state.busy === key;
  const result = (ctx.state.results || {})[key];
  return el('tr', { 'data-key': key },
    el('th', { scope: 'row' }, serviceName(release.service, release.namespace)),
    el('td', {}, el('span', { class: `state state-${release.state}`, title: MEANING[release.state] || '' },
      release.state)),
    el('td', {}, el('div', { class: 'segmented', role: 'group', 'aria-label': `release state of ${release.service}` },
      STATES.map((target) => el('button', {
        type: 'button',
        'aria-pressed': String(release.state === target),
        disabled: Boolean(ctx.state.busy),
        title: MEANING[target],
        onclick: () => switchTo(ctx, release, target),
      }, target)))),
    el('td', { class: 'outcome' }, busy ? el('span', { class: 'muted' }, 'switching…') : acks(result, ctx.data.sidecars)));
}

function render(ctx) {
  const { releases } = ctx.data;
  if (!releases.length) {
    return [el('p', { class: 'empty' }, 'No service yet: connect a sidecar or apply a RoutePolicy.')];
  }
  return [
    el('p', { class: 'muted' },
      `gray: ${MEANING.gray} · prod: ${MEANING.prod} · all: ${MEANING.all}.`),
    el('div', { class: 'scroll' }, el('table', {},
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col' }, 'Service'), el('th', { scope: 'col' }, 'State'),
        el('th', { scope: 'col' }, 'Switch'), el('th', { scope: 'col' }, 'Rollout'))),
      el('tbody', {}, releases.map((r) => row(ctx, r))))),
  ];
}

export default { title: 'Releases', load, render };
