// Rules: the rules in force as YAML, and the history: who changed what when, the diff
// against the previous revision, and a rollback behind a confirm step.

import { get, post } from './api.js';
import { el } from './dom.js';
import { diffLines, hunks } from './diff.js';
import { ago, time } from './format.js';
import { documents, resourceName, toYaml } from './yaml.js';

const HISTORY = 50;

async function load() {
  const [rules, history] = await Promise.all([get('/rules'), get(`/history?limit=${HISTORY}`)]);
  return { rules, history: history || [] };
}

/** The YAML of revision `n` (revisions never change, so each is fetched once). */
async function revisionText(state, n) {
  state.texts = state.texts || {};
  if (!(n in state.texts)) {
    const answer = await get(`/rules?revision=${n}`);
    state.texts[n] = documents(answer.resources || []).split('\n');
  }
  return state.texts[n];
}

async function showDiff(ctx, entry, previous) {
  const { state } = ctx;
  state.diffs = state.diffs || {};
  const n = entry.revision;
  if (state.diffs[n]) {
    delete state.diffs[n];
    ctx.redraw();
    return;
  }
  state.diffs[n] = { loading: true };
  ctx.redraw();
  try {
    const now = await revisionText(state, n);
    let before = [];
    let note = previous ? `against revision ${previous}` : 'the first revision: everything is new';
    if (previous) {
      try {
        before = await revisionText(state, previous);
      } catch (e) {
        if (e.status !== 404) throw e;
        note = `revision ${previous} is no longer kept: revision ${n} in full`;
      }
    }
    state.diffs[n] = { lines: hunks(diffLines(before, now)), note };
  } catch (e) {
    if (ctx.unauthorized(e)) return;
    state.diffs[n] = { error: e.message };
  }
  ctx.redraw();
}

async function rollback(ctx, n) {
  const { state } = ctx;
  state.confirm = null;
  state.busy = true;
  ctx.redraw();
  try {
    const outcome = await post('/rollback', { to: n });
    state.message = outcome.committed
      ? { text: `Rolled back to ${n}: now revision ${outcome.revision}.` }
      : { text: `Revision ${outcome.revision} already has the content of ${n}: nothing changed.` };
  } catch (e) {
    if (ctx.unauthorized(e)) return;
    state.message = { error: `Roll back to ${n} refused: ${e.message}` };
  } finally {
    state.busy = false;
  }
  ctx.redraw();
  ctx.refresh();
}

function diffView(d) {
  if (d.loading) return el('p', { class: 'muted' }, 'Loading diff…');
  if (d.error) return el('p', { class: 'error', role: 'alert' }, d.error);
  const body = d.lines.length
    ? d.lines.map((l) => el('span', { class: `d${{ '+': 'add', '-': 'del', '@': 'at' }[l.op] || ''}` },
      l.op === '@' ? `@@ ${l.text}\n` : `${l.op} ${l.text}\n`))
    : 'no change in the rules (a release switch writes a RoutePolicy)';
  return el('div', { class: 'diff' }, el('p', { class: 'muted small' }, d.note), el('pre', {}, body));
}

function actions(ctx, entry, previous, current) {
  const n = entry.revision;
  const { state } = ctx;
  const open = state.diffs && state.diffs[n];
  const buttons = [el('button', { type: 'button', 'aria-expanded': String(Boolean(open)),
    onclick: () => showDiff(ctx, entry, previous) }, open ? 'Hide diff' : 'Show diff')];
  // The revision in force has nothing to roll back to.
  if (n !== current) {
    if (state.confirm === n) {
      buttons.push(
        el('button', { type: 'button', class: 'danger', disabled: Boolean(state.busy),
          onclick: () => rollback(ctx, n) }, `Confirm roll back to ${n}`),
        el('button', { type: 'button', onclick: () => { state.confirm = null; ctx.redraw(); } }, 'Cancel'));
    } else {
      buttons.push(el('button', { type: 'button', disabled: Boolean(state.busy),
        onclick: () => { state.confirm = n; ctx.redraw(); } }, `Roll back to ${n}`));
    }
  }
  return el('div', { class: 'actions' }, buttons);
}

function historyRows(ctx) {
  const { history, rules } = ctx.data;
  return history.map((entry, i) => {
    const older = history[i + 1];
    const previous = older ? older.revision : entry.revision > 1 ? entry.revision - 1 : null;
    const d = ctx.state.diffs && ctx.state.diffs[entry.revision];
    return el('li', { class: 'revision card', 'data-key': `r${entry.revision}` },
      el('div', { class: 'rev-head' },
        el('span', { class: 'rev-number' }, `revision ${entry.revision}`),
        entry.revision === rules.revision ? el('span', { class: 'badge' }, 'in force') : null,
        el('span', { class: 'who' }, entry.appliedBy || 'unknown'),
        el('time', { datetime: entry.appliedAt || '', title: time(entry.appliedAtMs) },
          entry.appliedAtMs ? ago(entry.appliedAtMs) : '')),
      el('p', { class: 'summary' }, entry.summary || '(no summary)'),
      actions(ctx, entry, previous, rules.revision),
      d ? diffView(d) : null);
  });
}

function render(ctx) {
  const { rules } = ctx.data;
  const { message } = ctx.state;
  const resources = [...(rules.resources || [])]
    .sort((a, b) => resourceName(a).localeCompare(resourceName(b)));
  return [
    message ? el('p', { class: `banner ${message.error ? 'error' : 'ok'}`, role: 'status' },
      message.error || message.text) : null,
    el('p', { class: 'muted' }, `Revision ${rules.revision} in force: ${resources.length} resource${resources.length === 1 ? '' : 's'}.`),
    el('div', { class: 'resources' }, resources.map((r) => el('section', { class: 'card resource', 'data-key': resourceName(r) },
      el('h3', { class: 'mono' }, resourceName(r)),
      el('pre', {}, toYaml(r))))),
    el('h2', {}, 'History'),
    ctx.data.history.length
      ? el('ol', { class: 'history' }, historyRows(ctx))
      : el('p', { class: 'empty' }, 'No revision yet.'),
  ];
}

export default { title: 'Rules', load, render };
