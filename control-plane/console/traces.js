// Traces: the recent traces the sidecars exported, one trace's hop tree, and the
// propagation gaps (tagged requests whose app did not forward the trace context).

import { get } from './api.js';
import { el } from './dom.js';
import { num } from './format.js';

const RECENT = 25;

async function load(ctx) {
  const [recent, gaps] = await Promise.all([get(`/traces?recent=${RECENT}`), get('/gaps')]);
  const data = { recent: recent || [], gaps: gaps || [], selected: null, selectedError: null };
  const id = ctx.state.selected;
  if (id) {
    data.selected = data.recent.find((t) => t.traceId === id) || null;
    if (!data.selected) {
      try {
        [data.selected] = await get(`/traces/${encodeURIComponent(id)}`);
      } catch (e) {
        if (e.status === 401) throw e;
        data.selectedError = e.message;
      }
    }
  }
  return data;
}

const attr = (span, key) => (span.attributes || {})[key];

function roots(trace) {
  const ids = new Set(trace.spans.map((s) => s.spanId));
  return trace.spans.filter((s) => !s.parentSpanId || !ids.has(s.parentSpanId))
    .sort((a, b) => Number(a.startUnixNano) - Number(b.startUnixNano));
}

function summary(trace) {
  const root = roots(trace).find((s) => s.kind === 'server') || roots(trace)[0] || {};
  const tag = attr(root, 'graylane.tag');
  return {
    entry: attr(root, 'graylane.service') || root.name || '?',
    tag: tag && tag !== '-' ? tag : 'untagged',
    status: attr(root, 'http.response.status_code') || '-',
    ms: root.durationMs,
    start: Number(root.startUnixNano || 0) / 1e6,
    hops: trace.spans.filter((s) => s.kind === 'server').length,
  };
}

function select(ctx, id) {
  ctx.state.selected = ctx.state.selected === id ? null : id;
  ctx.redraw();
  ctx.refresh();
}

function hopRow(span, depth) {
  const server = span.kind === 'server';
  const tag = attr(span, 'graylane.tag');
  const source = attr(span, 'graylane.tag_source');
  const status = attr(span, 'http.response.status_code') || '-';
  // `graylane.fallback` is "true"/"false"; the reason says where the request went.
  const fallback = attr(span, 'graylane.fallback_reason') ||
    (attr(span, 'graylane.fallback') === 'true' ? 'yes' : '');
  const who = server
    ? [attr(span, 'graylane.service') || span.name, el('small', {}, attr(span, 'graylane.instance') || '')]
    : [`→ ${attr(span, 'graylane.destination') || span.name}`,
      el('small', {}, attr(span, 'graylane.destination_instance') || '')];
  const subset = attr(span, 'graylane.subset');
  return el('tr', { 'data-key': span.spanId, class: server ? 'hop-server' : 'hop-client' },
    el('td', { class: `hop d${Math.min(depth, 9)}` }, who),
    el('td', {}, server ? attr(span, 'graylane.label.version') || '-' : subset || ''),
    el('td', {}, server ? (tag && tag !== '-' ? `${tag}${source ? ` from ${source}` : ''}` : 'untagged') : ''),
    el('td', {}, attr(span, 'graylane.lane') || ''),
    el('td', { class: fallback ? 'fallback' : '' }, fallback),
    el('td', { class: Number(status) >= 500 ? 'error' : '' }, status),
    el('td', { class: 'num' }, `${num(span.durationMs)} ms`));
}

function hopTree(trace) {
  const children = new Map();
  const ids = new Set(trace.spans.map((s) => s.spanId));
  for (const s of trace.spans) {
    if (s.parentSpanId && ids.has(s.parentSpanId)) {
      if (!children.has(s.parentSpanId)) children.set(s.parentSpanId, []);
      children.get(s.parentSpanId).push(s);
    }
  }
  const rows = [];
  // Each span once, however its parent links loop (a broken exporter's cycle).
  const shown = new Set();
  const walk = (span, depth) => {
    if (shown.has(span.spanId)) return;
    shown.add(span.spanId);
    rows.push(hopRow(span, depth));
    const kids = (children.get(span.spanId) || [])
      .sort((a, b) => Number(a.startUnixNano) - Number(b.startUnixNano));
    for (const kid of kids) walk(kid, depth + 1);
  };
  for (const root of roots(trace)) walk(root, 0);
  // Spans reachable only from each other have no root: shown, not hidden.
  for (const span of trace.spans) walk(span, 0);
  const heads = ['Service', 'Version', 'Tag', 'Lane', 'Fallback', 'Status', 'Latency'];
  return el('section', { class: 'card tree', 'data-key': `tree-${trace.traceId}` },
    el('h2', {}, 'Trace ', el('span', { class: 'mono' }, trace.traceId)),
    el('div', { class: 'scroll' }, el('table', {},
      el('thead', {}, el('tr', {}, heads.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows))));
}

function recentTable(ctx) {
  const { recent } = ctx.data;
  if (!recent.length) {
    return el('p', { class: 'empty' }, 'No trace yet: sidecars export their spans here once requests flow.');
  }
  const heads = ['Trace', 'Started', 'Entry', 'Tag', 'Hops', 'Status', 'Duration'];
  return el('div', { class: 'scroll' }, el('table', { class: 'traces' },
    el('thead', {}, el('tr', {}, heads.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, recent.map((t) => {
      const s = summary(t);
      const open = ctx.state.selected === t.traceId;
      return el('tr', { 'data-key': t.traceId, class: open ? 'selected' : '' },
        el('td', {}, el('button', { type: 'button', class: 'link mono', 'aria-pressed': String(open),
          onclick: () => select(ctx, t.traceId) }, t.traceId)),
        el('td', { class: 'nowrap' }, s.start ? new Date(s.start).toLocaleTimeString() : ''),
        el('td', {}, s.entry),
        el('td', {}, s.tag),
        el('td', { class: 'num' }, String(s.hops)),
        el('td', { class: Number(s.status) >= 500 ? 'error' : '' }, s.status),
        el('td', { class: 'num' }, s.ms === undefined ? '' : `${num(s.ms)} ms`));
    }))));
}

function gapsTable(ctx) {
  const { gaps } = ctx.data;
  if (!gaps.length) {
    return el('p', { class: 'empty' }, "No propagation gap seen: every tagged request's calls kept the lane.");
  }
  const heads = ['Service', 'Destination', 'Gaps', 'Example trace'];
  return el('div', { class: 'scroll' }, el('table', {},
    el('thead', {}, el('tr', {}, heads.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, gaps.map((g) => el('tr', { 'data-key': `${g.service}>${g.destination}` },
      el('th', { scope: 'row' }, g.service),
      el('td', {}, g.destination),
      el('td', { class: 'num' }, String(g.count)),
      el('td', {}, g.exampleTraceId ? el('button', { type: 'button', class: 'link mono',
        onclick: () => select(ctx, g.exampleTraceId) }, g.exampleTraceId) : ''))))));
}

function render(ctx) {
  const { selected, selectedError } = ctx.data;
  const find = (event) => {
    event.preventDefault();
    const id = event.currentTarget.querySelector('input').value.trim().toLowerCase();
    if (id) select(ctx, id);
  };
  return [
    el('form', { class: 'row find', onsubmit: find },
      el('label', { for: 'trace-id' }, 'Trace id'),
      el('input', { id: 'trace-id', class: 'mono', placeholder: '32 hex digits', spellcheck: 'false' }),
      el('button', { type: 'submit' }, 'Show trace')),
    selectedError ? el('p', { class: 'banner error', role: 'alert' }, selectedError) : null,
    selected ? hopTree(selected) : null,
    el('h2', {}, 'Recent traces'),
    recentTable(ctx),
    el('h2', {}, 'Propagation gaps'),
    el('p', { class: 'muted small' },
      'Requests that carried a lane tag in but called out without the trace context: the app did not forward it.'),
    gapsTable(ctx),
  ];
}

export default { title: 'Traces', load, render };
