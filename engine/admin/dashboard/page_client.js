// One charge point: its details, kick, a command form, and the live trace of its frames.

import { api, get, missing, message, stream } from './api.js';
import { h, replace, unavailable, fmtTime, json } from './dom.js';
import { connectorChips, boot } from './page_clients.js';
import { recordingsPanel } from './recordings.js';

const FALLBACK_ACTIONS = {
  'ocpp1.6': ['CancelReservation', 'ChangeAvailability', 'ChangeConfiguration', 'ClearCache', 'ClearChargingProfile',
    'DataTransfer', 'GetCompositeSchedule', 'GetConfiguration', 'GetDiagnostics', 'GetLocalListVersion',
    'RemoteStartTransaction', 'RemoteStopTransaction', 'ReserveNow', 'Reset', 'SendLocalList',
    'SetChargingProfile', 'TriggerMessage', 'UnlockConnector', 'UpdateFirmware'],
  'ocpp2.0.1': ['ChangeAvailability', 'ClearCache', 'DataTransfer', 'GetBaseReport', 'GetLog', 'GetVariables',
    'RequestStartTransaction', 'RequestStopTransaction', 'Reset', 'SetChargingProfile', 'SetVariables',
    'TriggerMessage', 'UnlockConnector', 'UpdateFirmware'],
};
const MAX_TRACE = 5_000; // records kept in the page; the oldest go first

function details(c) {
  const b = boot(c);
  const rows = [
    ['Protocol', c.proto_ver], ['Vendor / model', b.vendor], ['Firmware', b.firmware],
    ['Serial number', (c.boot && c.boot.serial_number) || '—'], ['Connectors', connectorChips(c.connectors)],
    ['Connected since', fmtTime(c.connected_at)], ['Last message', fmtTime(c.last_message_at)],
    ['Node', c.node], ['Listener', c.listener], ['Address', `${c.ip_address}:${c.port}`],
    ['Username', c.username || '—'], ['Security profile', c.security_profile ?? '—'],
    ['In flight / queued', `${c.inflight ?? c.inflight_cnt ?? 0} / ${c.queued ?? c.mqueue_len ?? 0}`],
    ['Frames received / sent', `${c.recv_cnt ?? '—'} / ${c.send_cnt ?? '—'}`],
  ];
  return h('table', { class: 'details', id: 'client-details' }, h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v)))));
}

function commandForm(cid, protoVer) {
  const list = h('datalist', { id: 'call-actions' });
  const action = h('input', { id: 'call-action', list: 'call-actions', placeholder: 'Action, e.g. Reset', required: true, autocomplete: 'off' });
  const payload = h('textarea', { id: 'call-payload', rows: 6, spellcheck: 'false' }, '{}');
  const send = h('button', { type: 'submit', id: 'call-send' }, 'Send');
  const out = h('pre', { id: 'call-answer', class: 'answer' });
  const form = h('form', { id: 'call-form', class: 'panel' }, h('h3', {}, 'Send a command'), list,
    h('label', {}, 'Action', action), h('label', {}, 'Payload (JSON)', payload), send, out);
  (async () => {
    const answer = await get('/gateways/ocpp/schemas/' + encodeURIComponent(protoVer));
    const names = answer.ok ? (Array.isArray(answer.data) ? answer.data : answer.data.data || [])
      : FALLBACK_ACTIONS[protoVer] || FALLBACK_ACTIONS['ocpp2.0.1'];
    replace(list, names.map((n) => h('option', { value: typeof n === 'string' ? n : n.action || n.name })));
  })();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    out.className = 'answer';
    let body;
    try {
      body = JSON.parse(payload.value || '{}');
    } catch (err) {
      out.className = 'answer error';
      out.textContent = `The payload is not JSON: ${err.message}`;
      return;
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      out.className = 'answer error';
      out.textContent = 'The payload must be a JSON object.';
      return;
    }
    send.disabled = true;
    out.textContent = 'Checking…';
    try {
      const check = await api('POST', '/gateways/ocpp/schemas/validate',
        { proto_ver: protoVer, action: action.value.trim(), kind: 'request', payload: body });
      if (check.ok && check.data && check.data.valid === false) {
        out.className = 'answer error';
        out.textContent = `Not sent: the payload does not match the ${protoVer} schema of ${action.value}:\n` + check.data.errors.join('\n');
        return;
      }
      out.textContent = 'Sent, waiting for the answer…';
      const answer = await api('POST', `/gateways/ocpp/clients/${encodeURIComponent(cid)}/call`,
        { action: action.value.trim(), payload: body });
      out.className = answer.ok ? 'answer ok' : 'answer error';
      out.textContent = answer.ok ? json(answer.data) : `${answer.status}: ${message(answer)}`;
    } finally {
      send.disabled = false;
    }
  });
  return form;
}

function tracePanel(cid) {
  const records = [];
  let paused = false;
  const lines = h('ol', { id: 'trace-lines', class: 'trace' });
  const state = h('span', { id: 'trace-state', class: 'muted' }, 'connecting…');
  const pause = h('button', { type: 'button', id: 'trace-pause' }, 'Pause');
  const clearButton = h('button', { type: 'button', id: 'trace-clear' }, 'Clear');
  const download = h('button', { type: 'button', id: 'trace-download' }, 'Download JSON Lines');
  const panel = h('div', { class: 'panel', id: 'trace-panel' },
    h('h3', {}, 'Live trace'), h('div', { class: 'toolbar' }, pause, clearButton, download, state), lines);

  function line(record) {
    if (record.lost) return h('li', { class: 'lost' }, `… ${record.lost} frames lost (the page was too slow)`);
    const arrow = record.direction === 'in' ? '→ gateway' : record.direction === 'out' ? '← gateway' : '·';
    return h('li', { class: `frame ${record.direction || 'event'}` }, h('span', { class: 'time' }, record.time || ''),
      h('span', { class: 'dir' }, arrow), h('code', {}, record.frame ?? record.event ?? ''));
  }
  function add(record) {
    records.push(record);
    if (records.length > MAX_TRACE) records.shift();
    if (paused) return;
    lines.append(line(record));
    while (lines.childElementCount > MAX_TRACE) lines.firstElementChild.remove();
    lines.scrollTop = lines.scrollHeight;
  }
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) replace(lines, records.map(line));
  });
  clearButton.addEventListener('click', () => { records.length = 0; replace(lines); });
  download.addEventListener('click', () => {
    const text = records.filter((r) => !r.lost).map((r) => JSON.stringify(r)).join('\n') + (records.length ? '\n' : '');
    const url = URL.createObjectURL(new Blob([text], { type: 'application/x-ndjson' }));
    const a = h('a', { href: url, download: `${cid}.jsonl` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  const stop = stream(`/gateways/ocpp/clients/${encodeURIComponent(cid)}/frames`, (name, data) => {
    state.textContent = 'live';
    let record;
    try { record = JSON.parse(data); } catch { return; }
    add(name === 'lost' ? { lost: record.lost } : record);
  }, (end) => {
    if (missing(end)) replace(panel, h('h3', {}, 'Live trace'), unavailable('The live trace', `GET /api/v5/gateways/ocpp/clients/{clientid}/frames`));
    else state.textContent = end.ok ? 'ended' : `stopped: ${message(end)}`;
  }, () => { state.textContent = 'live'; });
  return { panel, stop };
}

export function render(root, cid) {
  const head = h('div', { id: 'client-head' }, 'Loading…');
  const kick = h('button', { type: 'button', id: 'client-kick', class: 'danger' }, 'Kick');
  const kickState = h('span', { id: 'kick-state' });
  const trace = tracePanel(cid);
  const recordings = recordingsPanel(cid);
  const side = h('div', { id: 'client-side' });
  replace(root, h('h2', {}, h('a', { href: '#/clients' }, 'Charge points'), ' / ', h('span', { id: 'client-id' }, cid)),
    h('div', { class: 'toolbar' }, kick, kickState), h('div', { class: 'two' }, head, side), trace.panel, recordings.panel);
  let formShown = false;
  async function load() {
    const answer = await get('/gateways/ocpp/clients/' + encodeURIComponent(cid));
    if (!answer.ok) {
      replace(head, h('p', { class: 'muted', id: 'client-gone' }, answer.status === 404 ? `${cid} is not connected to this node.` : message(answer)));
      kick.disabled = true;
      return;
    }
    kick.disabled = false;
    replace(head, details(answer.data));
    if (!formShown) {
      formShown = true;
      replace(side, commandForm(cid, answer.data.proto_ver));
    }
  }
  let armed = false;
  kick.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      kick.textContent = 'Really kick?';
      return;
    }
    armed = false;
    kick.textContent = 'Kick';
    const answer = await api('DELETE', '/gateways/ocpp/clients/' + encodeURIComponent(cid));
    kickState.textContent = answer.ok ? 'Kicked.' : message(answer);
    load();
  });
  load();
  const timer = setInterval(load, 5_000);
  return () => { clearInterval(timer); trace.stop(); recordings.stop(); };
}
