// Actions and connectors: status, metrics, buffer depth, last error.

import { get, message } from './api.js';
import { h, replace, fmtNumber } from './dom.js';

function statusCell(status) {
  return h('td', { class: `state state-${String(status).toLowerCase()}` }, status);
}

export function render(root) {
  const actions = h('tbody', { id: 'actions-rows' });
  const connectors = h('tbody', { id: 'connectors-rows' });
  const error = h('p', { class: 'error' });
  replace(root, h('h2', {}, 'Actions'), error,
    h('table', { class: 'grid', id: 'actions-table' }, h('thead', {}, h('tr', {},
      ['Action', 'Connector', 'Status', 'Matched', 'Success', 'Failed', 'Dropped', 'Retried', 'Buffered', 'In flight'].map((t) => h('th', {}, t)))), actions),
    h('h2', {}, 'Connectors'),
    h('table', { class: 'grid', id: 'connectors-table' }, h('thead', {}, h('tr', {},
      ['Connector', 'Type', 'Status', 'Last error'].map((t) => h('th', {}, t)))), connectors));
  async function load() {
    const [a, c] = await Promise.all([get('/actions'), get('/connectors')]);
    if (!a.ok || !c.ok) { error.textContent = message(a.ok ? c : a); return; }
    error.textContent = '';
    replace(actions, a.data.length ? a.data.map((x) => h('tr', { 'data-action': x.id }, h('td', {}, x.id), h('td', {}, x.connector),
      statusCell(x.status), ['matched', 'success', 'failed', 'dropped', 'retried', 'queuing', 'inflight'].map((k) => h('td', {}, fmtNumber(x.metrics[k])))))
      : h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'No actions configured.')));
    replace(connectors, c.data.length ? c.data.map((x) => h('tr', { 'data-connector': x.id }, h('td', {}, x.id), h('td', {}, x.type),
      statusCell(x.status), h('td', { class: x.last_error ? 'error' : 'muted' }, x.last_error || '—')))
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No connectors configured.')));
  }
  load();
  const timer = setInterval(load, 5_000);
  return () => clearInterval(timer);
}
