// Charge points: one page of the fleet at a time, searched and filtered by the gateway (never the
// whole list in the browser: it stays fast at 20,000).

import { get, message } from './api.js';
import { h, replace, fmtTime, fmtNumber } from './dom.js';

const LIMIT = 50;
const EVERY_MS = 5_000;
export const STATUSES = ['Available', 'Preparing', 'Charging', 'SuspendedEV', 'SuspendedEVSE', 'Finishing',
  'Reserved', 'Occupied', 'Unavailable', 'Faulted'];

export function connectorChips(connectors) {
  if (!Array.isArray(connectors) || !connectors.length) return h('span', { class: 'muted' }, '—');
  return h('span', { class: 'chips' }, connectors.map((c) => h('span', {
    class: `chip status-${String(c.status || 'unknown').toLowerCase()}`,
    title: `${c.evse_id != null ? 'EVSE ' + c.evse_id + ' ' : ''}connector ${c.connector_id}: ${c.status}${c.error_code && c.error_code !== 'NoError' ? ' (' + c.error_code + ')' : ''}`,
    'data-connector': c.connector_id,
  }, `${c.evse_id != null ? c.evse_id + '/' : ''}${c.connector_id} ${c.status}`)));
}

export function boot(c) {
  const b = c.boot || {};
  return { vendor: [b.vendor, b.model].filter(Boolean).join(' ') || '—', firmware: b.firmware_version || '—' };
}

export function render(root) {
  const state = { page: 1, like: '', status: '', proto: '' };
  const search = h('input', { id: 'clients-search', type: 'search', placeholder: 'Search charge point id', 'aria-label': 'search' });
  const status = h('select', { id: 'clients-status', 'aria-label': 'connector status' },
    h('option', { value: '' }, 'all statuses'), STATUSES.map((s) => h('option', { value: s }, `any ${s}`)));
  const proto = h('select', { id: 'clients-proto', 'aria-label': 'protocol' },
    h('option', { value: '' }, 'all versions'), ['ocpp1.6', 'ocpp2.0.1', 'ocpp2.1'].map((p) => h('option', { value: p }, p)));
  const prev = h('button', { type: 'button', id: 'clients-prev' }, '‹ Previous');
  const next = h('button', { type: 'button', id: 'clients-next' }, 'Next ›');
  const info = h('span', { id: 'clients-count', class: 'muted' });
  const body = h('tbody', { id: 'clients-rows' });
  const error = h('p', { class: 'error', id: 'clients-error' });
  const table = h('table', { class: 'grid', id: 'clients-table' },
    h('thead', {}, h('tr', {}, ['Charge point', 'Protocol', 'Vendor / model', 'Firmware', 'Connectors',
      'Connected since', 'Last message', 'Node', 'In flight / queued'].map((t) => h('th', {}, t)))), body);
  replace(root, h('h2', {}, 'Charge points'),
    h('div', { class: 'toolbar' }, search, status, proto, prev, next, info), error, table);

  let seq = 0;
  async function load() {
    const mine = ++seq;
    const q = new URLSearchParams({ page: String(state.page), limit: String(LIMIT) });
    if (state.like) q.set('like_clientid', state.like);
    if (state.status) q.set('status', state.status);
    if (state.proto) q.set('proto_ver', state.proto);
    const answer = await get('/gateways/ocpp/clients?' + q);
    if (mine !== seq) return; // a newer request is on its way
    if (!answer.ok) {
      error.textContent = message(answer);
      return;
    }
    error.textContent = '';
    const { data, meta } = answer.data;
    const first = (meta.page - 1) * meta.limit;
    info.textContent = meta.count ? `${fmtNumber(first + 1)}–${fmtNumber(first + data.length)} of ${fmtNumber(meta.count)}` : 'none';
    prev.disabled = meta.page <= 1;
    next.disabled = !meta.hasnext && first + data.length >= meta.count;
    replace(body, data.map((c) => {
      const b = boot(c);
      return h('tr', { 'data-clientid': c.clientid },
        h('td', {}, h('a', { href: '#/clients/' + encodeURIComponent(c.clientid) }, c.clientid)),
        h('td', {}, c.proto_ver), h('td', {}, b.vendor), h('td', {}, b.firmware),
        h('td', {}, connectorChips(c.connectors)), h('td', {}, fmtTime(c.connected_at)),
        h('td', {}, fmtTime(c.last_message_at)), h('td', {}, c.node),
        h('td', {}, `${c.inflight ?? c.inflight_cnt ?? 0} / ${c.queued ?? c.mqueue_len ?? 0}`));
    }));
  }

  let debounce;
  search.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.like = search.value.trim(); state.page = 1; load(); }, 250);
  });
  status.addEventListener('change', () => { state.status = status.value; state.page = 1; load(); });
  proto.addEventListener('change', () => { state.proto = proto.value; state.page = 1; load(); });
  prev.addEventListener('click', () => { state.page = Math.max(1, state.page - 1); load(); });
  next.addEventListener('click', () => { state.page += 1; load(); });
  load();
  const timer = setInterval(load, EVERY_MS);
  return () => { clearInterval(timer); clearTimeout(debounce); };
}
