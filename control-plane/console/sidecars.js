// Sidecars: every connected instance, its labels and lanes, the revision it acked
// against the one in force, its identity and the reason of its last NACK.

import { get } from './api.js';
import { el } from './dom.js';

async function load() {
  const [sidecars, history] = await Promise.all([get('/sidecars'), get('/history?limit=1')]);
  const current = history && history.length ? history[0].revision : 0;
  return { sidecars: sidecars || [], current };
}

function ackCell(s, current) {
  const acked = Number(s.ackedRevision || 0);
  const [cls, word] = s.nack ? ['bad', 'NACK'] : acked >= current ? ['ok', 'acked'] : ['wait', 'behind'];
  return el('td', { class: 'nowrap', title: `${word}; revision in force: ${current}` },
    el('span', { class: `dot ${cls}`, 'aria-label': word, role: 'img' }), String(acked));
}

function labels(map) {
  return el('div', { class: 'chips' }, Object.entries(map || {}).map(([k, v]) =>
    el('span', { class: 'chip mono' }, `${k}=${v}`)));
}

function render({ data }) {
  const list = [...data.sidecars].sort((a, b) =>
    `${a.namespace}/${a.service}/${a.instance}`.localeCompare(`${b.namespace}/${b.service}/${b.instance}`));
  if (!list.length) return [el('p', { class: 'empty' }, 'No sidecar is connected.')];
  const nacking = list.filter((s) => s.nack).length;
  const behind = list.filter((s) => !s.nack && Number(s.ackedRevision || 0) < data.current).length;
  const summary = `${list.length} connected · revision ${data.current} in force · ` +
    `${behind} behind · ${nacking} NACK`;
  const heads = ['Service', 'Namespace', 'Instance', 'Address', 'Labels', 'Lanes',
    'Acked revision', 'Identity', 'NACK reason'];
  return [
    el('p', { class: 'muted' }, summary),
    el('div', { class: 'scroll' }, el('table', {},
      el('thead', {}, el('tr', {}, heads.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, list.map((s) => el('tr', { 'data-key': `${s.namespace}/${s.service}/${s.instance}` },
        el('th', { scope: 'row' }, s.service),
        el('td', {}, s.namespace || 'default'),
        el('td', { class: 'mono' }, s.instance),
        el('td', { class: 'mono' }, s.address),
        el('td', {}, labels(s.labels)),
        el('td', {}, (s.lanes || []).length ? (s.lanes || []).join(', ') : el('span', { class: 'muted' }, 'base')),
        ackCell(s, data.current),
        el('td', { class: 'mono small wrap' }, s.identity || ''),
        el('td', { class: s.nack ? 'error' : '' },
          s.nack ? `revision ${s.nack.revision}: ${s.nack.reason}` : '')))))),
  ];
}

export default { title: 'Sidecars', load, render };
