// Lanes: services × lanes, who serves each cell (or where its requests go instead),
// and each cell's live traffic from the sidecars' reports.

import { get } from './api.js';
import { el } from './dom.js';
import { laneClass, num, serviceName } from './format.js';

/** Traffic is read over the last minute: long enough to smooth 5 s reports. */
const WINDOW = '1m';

async function load() {
  const [lanes, sidecars, traffic] = await Promise.all([
    get('/lanes'),
    get('/sidecars'),
    // Not every build reports traffic (404): the matrix stands without numbers.
    get(`/traffic?window=${WINDOW}`).catch((e) => {
      if (e.status === 401) throw e;
      return null;
    }),
  ]);
  return { lanes: lanes || [], sidecars: sidecars || [], traffic };
}

function services(data) {
  const all = new Map();
  const add = (namespace, service) => all.set(`${namespace}/${service}`, { namespace, service });
  for (const s of data.sidecars) add(s.namespace || 'default', s.service);
  for (const lane of data.lanes) for (const s of lane.services) add(s.namespace || 'default', s.service);
  return [...all.values()].sort((a, b) =>
    a.namespace.localeCompare(b.namespace) || a.service.localeCompare(b.service));
}

/** Sums a cell's subsets: rates add up, errors are weighted, p99 is the worst subset's. */
function cellTraffic(traffic, svc, lane) {
  if (!traffic) return null;
  const rows = traffic.filter((r) => r.service === svc.service && r.lane === lane &&
    (r.namespace || 'default') === svc.namespace);
  if (!rows.length) return null;
  const rps = rows.reduce((n, r) => n + r.rps, 0);
  const requests = rows.reduce((n, r) => n + (r.requests || 0), 0);
  const errors = rows.reduce((n, r) => n + (r.errors || 0), 0);
  const rate = requests ? errors / requests
    : rows.reduce((n, r) => n + r.errorRate * r.rps, 0) / (rps || 1);
  const p99s = rows.map((r) => r.p99Ms).filter((p) => p !== null && p !== undefined);
  const p99 = p99s.length ? `p99 ${num(Math.max(...p99s))} ms` : 'p99 n/a';
  const subsets = rows.map((r) => `${r.subset}: ${num(r.rps)} req/s`).join(', ');
  return el('div', { class: `traffic${errors ? ' has-errors' : ''}`, title: `subsets: ${subsets}` },
    `${num(rps)} req/s · ${num(rate * 100)}% errors · ${p99}`);
}

function instances(ids) {
  return el('div', { class: 'chips' }, ids.map((id) => el('span', { class: 'chip mono' }, id)));
}

function laneCell(lane, svc) {
  const entry = lane.services.find((s) => s.service === svc.service &&
    (s.namespace || 'default') === svc.namespace);
  if (entry && entry.instances.length) return instances(entry.instances);
  const to = entry && entry.fallsBackTo;
  if (to === 'fail') return el('span', { class: 'fails' }, 'fails (503)');
  if (to) return el('span', { class: 'fallback' }, `falls back to ${to}`);
  return el('span', { class: 'muted' }, 'no instance');
}

function baseCell(data, svc) {
  const ids = data.sidecars
    .filter((s) => s.service === svc.service && (s.namespace || 'default') === svc.namespace &&
      !(s.lanes && s.lanes.length))
    .map((s) => s.instance)
    .sort();
  return ids.length ? instances(ids) : el('span', { class: 'muted' }, 'no base instance');
}

function header(lane, index) {
  const selector = Object.entries(lane.selector || {}).map(([k, v]) => `${k}=${v}`).join(', ');
  return el('th', { class: `lane-head ${laneClass(index)}`, scope: 'col' },
    el('span', { class: 'swatch' }), lane.name,
    el('small', {}, `tag ${lane.tag}${selector ? ` · ${selector}` : ''}`));
}

function render({ data }) {
  const rows = services(data);
  if (!rows.length) {
    return [el('p', { class: 'empty' }, 'No service yet: no sidecar is connected and no rule names one.')];
  }
  const table = el('table', { class: 'matrix' },
    el('thead', {}, el('tr', {},
      el('th', { scope: 'col' }, 'Service'),
      el('th', { class: 'lane-head base', scope: 'col' }, el('span', { class: 'swatch' }), 'base',
        el('small', {}, 'untagged, instances in no lane')),
      data.lanes.map(header))),
    el('tbody', {}, rows.map((svc) => el('tr', { 'data-key': `${svc.namespace}/${svc.service}` },
      el('th', { scope: 'row' }, serviceName(svc.service, svc.namespace)),
      el('td', { class: 'base' }, baseCell(data, svc), cellTraffic(data.traffic, svc, '-')),
      data.lanes.map((lane, i) => el('td', { class: laneClass(i) },
        laneCell(lane, svc), cellTraffic(data.traffic, svc, lane.name)))))));
  const note = data.traffic
    ? `Traffic over the last minute, as the callers' sidecars report it (every 5 s).`
    : 'No traffic numbers: this control plane does not collect traffic reports.';
  return [el('div', { class: 'scroll' }, table), el('p', { class: 'muted small' }, note)];
}

export default { title: 'Lanes', load, render };
