// A charge point's recorded traces (EMQX's trace API: files of JSON Lines on the node): start one,
// stop it, download it, delete it.

import { api, get, missing, message } from './api.js';
import { h, replace, unavailable, fmtTime, fmtNumber } from './dom.js';

function traceName(cid) {
  const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${cid.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40)}-${stamp}`;
}

function size(logSize) {
  if (!logSize || typeof logSize !== 'object') return '—';
  return fmtNumber(Object.values(logSize).reduce((n, b) => n + Number(b || 0), 0)) + ' bytes';
}

export function recordingsPanel(cid) {
  const panel = h('div', { class: 'panel', id: 'recordings' });
  const state = h('p', { id: 'recordings-state' });
  const rows = h('tbody', { id: 'recordings-rows' });
  const start = h('button', { type: 'button', id: 'recording-start' }, 'Record to a file');
  replace(panel, h('h3', {}, 'Recorded traces'), h('div', { class: 'toolbar' }, start), state,
    h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ['Name', 'Status', 'Started', 'Size', ''].map((t) => h('th', {}, t)))), rows));

  async function load() {
    const answer = await get('/trace');
    if (missing(answer)) {
      replace(panel, h('h3', {}, 'Recorded traces'), unavailable('Recording', 'GET /api/v5/trace'));
      return false;
    }
    if (!answer.ok) { state.className = 'error'; state.textContent = message(answer); return true; }
    const list = (Array.isArray(answer.data) ? answer.data : answer.data.data || []).filter((t) => t.clientid === cid);
    replace(rows, list.length ? list.map((t) => {
      const stop = h('button', { type: 'button', class: 'trace-stop', disabled: t.status !== 'running' }, 'Stop');
      stop.addEventListener('click', async () => { report(await api('PUT', `/trace/${encodeURIComponent(t.name)}/stop`)); load(); });
      const remove = h('button', { type: 'button', class: 'trace-delete danger' }, 'Delete');
      remove.addEventListener('click', async () => { report(await api('DELETE', `/trace/${encodeURIComponent(t.name)}`)); load(); });
      return h('tr', { 'data-trace': t.name }, h('td', {}, t.name), h('td', {}, t.status), h('td', {}, fmtTime(t.start_at)),
        h('td', {}, size(t.log_size)),
        h('td', {}, h('a', { href: `/api/v5/trace/${encodeURIComponent(t.name)}/download`, download: `${t.name}.jsonl` }, 'Download'), ' ', stop, ' ', remove));
    }) : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'None for this charge point.')));
    return true;
  }
  function report(answer) {
    state.className = answer.ok ? 'ok' : 'error';
    state.textContent = answer.ok ? '' : message(answer);
  }
  start.addEventListener('click', async () => {
    const answer = await api('POST', '/trace', { name: traceName(cid), type: 'clientid', clientid: cid });
    report(answer);
    if (answer.ok) state.textContent = `Recording to ${answer.data.name}.`;
    load();
  });
  let timer = null;
  load().then((present) => { if (present) timer = setInterval(load, 10_000); });
  return { panel, stop: () => { if (timer) clearInterval(timer); } };
}
