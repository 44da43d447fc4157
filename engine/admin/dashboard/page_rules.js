// Rules: the list with metrics, enable/disable, and an editor with the rule tester beside it.

import { api, get, message } from './api.js';
import { h, replace, fmtNumber, json } from './dom.js';

const DEFAULT_SQL = 'SELECT\n  clientid, payload\nFROM\n  "ocpp/cp/+"';
const DEFAULT_CONTEXT = '{\n  "topic": "ocpp/cp/CP1",\n  "clientid": "CP1",\n  "payload": {"action": "Heartbeat"}\n}';

// "line 1, column 8: unknown function nope" → the SQL's line with a caret under the column
function pointAt(sql, text) {
  const found = /line (\d+), column (\d+)/.exec(text);
  if (!found) return null;
  const line = Number(found[1]), column = Number(found[2]);
  const source = sql.split('\n')[line - 1];
  if (source === undefined) return null;
  return `${String(line).padStart(3)} | ${source}\n      ${' '.repeat(Math.max(0, column - 1))}^`;
}

function editor(rule, done) {
  const id = h('input', { id: 'rule-id', value: rule ? rule.id : '', placeholder: 'rule id (empty: one is made)', disabled: !!rule });
  const sql = h('textarea', { id: 'rule-sql', rows: 8, spellcheck: 'false' });
  sql.value = rule ? rule.sql : DEFAULT_SQL;
  const actions = h('input', { id: 'rule-actions', placeholder: 'actions, comma separated: mqtt:my_action' });
  actions.value = rule ? rule.actions.filter((a) => typeof a === 'string').join(', ') : '';
  const description = h('input', { id: 'rule-description', value: rule ? rule.description : '' });
  const context = h('textarea', { id: 'rule-context', rows: 8, spellcheck: 'false' });
  context.value = DEFAULT_CONTEXT;
  const output = h('pre', { id: 'rule-output', class: 'answer' });
  const saveState = h('p', { id: 'rule-save-state' });
  const test = h('button', { type: 'button', id: 'rule-test' }, 'Test');
  const save = h('button', { type: 'button', id: 'rule-save' }, rule ? 'Save' : 'Create');
  const cancel = h('button', { type: 'button', id: 'rule-cancel' }, 'Close');

  test.addEventListener('click', async () => {
    output.className = 'answer';
    let ctx;
    try { ctx = JSON.parse(context.value || '{}'); } catch (err) {
      output.className = 'answer error';
      output.textContent = `The context is not JSON: ${err.message}`;
      return;
    }
    const answer = await api('POST', '/rule_test', { sql: sql.value, context: ctx });
    if (answer.ok) {
      output.className = 'answer ok';
      output.textContent = json(answer.data);
    } else if (answer.status === 412) {
      output.className = 'answer muted';
      output.textContent = 'No output: the rule does not match this context (its FROM or WHERE).';
    } else {
      output.className = 'answer error';
      const text = message(answer);
      const where = pointAt(sql.value, text);
      output.textContent = where ? `${text}\n\n${where}` : text;
    }
  });
  save.addEventListener('click', async () => {
    const body = {
      sql: sql.value, description: description.value,
      actions: actions.value.split(',').map((a) => a.trim()).filter(Boolean),
    };
    if (rule) {
      const kept = rule.actions.filter((a) => typeof a !== 'string'); // functions (republish, console) stay
      body.actions = [...body.actions, ...kept];
    } else if (id.value.trim()) body.id = id.value.trim();
    const answer = rule ? await api('PUT', '/rules/' + encodeURIComponent(rule.id), body) : await api('POST', '/rules', body);
    saveState.className = answer.ok ? 'ok' : 'error';
    saveState.textContent = answer.ok ? `Saved ${answer.data.id}.` : message(answer);
    if (answer.ok) done();
  });
  cancel.addEventListener('click', () => done(true));
  return h('div', { class: 'panel', id: 'rule-editor' }, h('h3', {}, rule ? `Edit ${rule.id}` : 'New rule'),
    h('div', { class: 'two' },
      h('div', {}, h('label', {}, 'Id', id), h('label', {}, 'SQL', sql), h('label', {}, 'Actions', actions),
        h('label', {}, 'Description', description), h('div', { class: 'toolbar' }, save, cancel), saveState),
      h('div', {}, h('label', {}, 'Test context (JSON)', context), test, h('label', {}, 'Output'), output)));
}

export function render(root) {
  const body = h('tbody', { id: 'rules-rows' });
  const error = h('p', { class: 'error', id: 'rules-error' });
  const slot = h('div', { id: 'rule-slot' });
  const create = h('button', { type: 'button', id: 'rule-new' }, 'New rule');
  replace(root, h('h2', {}, 'Rules'), h('div', { class: 'toolbar' }, create), error,
    h('table', { class: 'grid', id: 'rules-table' }, h('thead', {}, h('tr', {},
      ['Id', 'SQL', 'Enabled', 'Matched', 'Passed', 'Failed', 'Actions ok / failed', ''].map((t) => h('th', {}, t)))), body),
    slot);

  const open = (rule) => replace(slot, editor(rule, (closed) => { if (closed) replace(slot); load(); }));
  create.addEventListener('click', () => open(null));

  async function load() {
    const answer = await get('/rules?limit=1000');
    if (!answer.ok) { error.textContent = message(answer); return; }
    error.textContent = '';
    replace(body, answer.data.data.map((rule) => {
      const m = rule.metrics || {};
      const toggle = h('button', { type: 'button', class: 'toggle', 'data-rule': rule.id }, rule.enable ? 'Disable' : 'Enable');
      toggle.addEventListener('click', async () => {
        const r = await api('PUT', '/rules/' + encodeURIComponent(rule.id), { enable: !rule.enable });
        if (!r.ok) error.textContent = message(r);
        load();
      });
      const edit = h('button', { type: 'button', class: 'edit', 'data-rule': rule.id }, 'Edit');
      edit.addEventListener('click', () => open(rule));
      return h('tr', { 'data-rule': rule.id }, h('td', {}, rule.id), h('td', {}, h('code', {}, rule.sql)),
        h('td', { class: rule.enable ? 'ok' : 'muted' }, rule.enable ? 'yes' : 'no'),
        h('td', {}, fmtNumber(m.matched)), h('td', {}, fmtNumber(m.passed)), h('td', {}, fmtNumber(m.failed)),
        h('td', {}, `${fmtNumber(m['actions.success'])} / ${fmtNumber(m['actions.failed'])}`), h('td', {}, toggle, ' ', edit));
    }));
  }
  load();
  const timer = setInterval(load, 10_000);
  return () => clearInterval(timer);
}
