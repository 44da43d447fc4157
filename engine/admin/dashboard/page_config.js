// Config: the effective HOCON, edited in place; validate (each error shown at its key's line),
// apply (hot reload), and reload from the files.

import { api, get, message } from './api.js';
import { h, replace } from './dom.js';

const KEY = String.raw`("(?:[^"\\]|\\.)*"|[\w$.\-]+)`;
const OPEN = new RegExp(`^${KEY}\\s*\\{$`);
const EMPTY = new RegExp(`^${KEY}\\s*\\{\\}$`);
const LEAF = new RegExp(`^${KEY}\\s*[=:]\\s*(.*)$`);

// The HOCON text as the gateway prints it (one value per line), read line by line: every object and
// value with its path (as written, quotes kept), its line (1-based) and its value's text.
// `parsed` is false when a line is not of that shape (then the text is sent whole).
export function parseLines(text) {
  const entries = [];
  const stack = [];
  let parsed = true;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    let m;
    if (!line || line.startsWith('#') || line.startsWith('//')) return;
    if ((m = OPEN.exec(line))) {
      stack.push(m[1]);
      entries.push({ path: [...stack], line: i + 1, value: null });
    } else if ((m = EMPTY.exec(line))) {
      entries.push({ path: [...stack, m[1]], line: i + 1, value: '{}' });
    } else if (line === '}') {
      if (!stack.length) parsed = false;
      stack.pop();
    } else if ((m = LEAF.exec(line))) {
      entries.push({ path: [...stack, m[1]], line: i + 1, value: m[2].trim() });
    } else {
      parsed = false;
    }
  });
  return { entries, parsed: parsed && !stack.length };
}

const plain = (path) => path.map((k) => k.replace(/^"|"$/g, '')).join('.');

// full dotted key (unquoted) → line number (1-based)
export function keyLines(text) {
  return new Map(parseLines(text).entries.map((e) => [plain(e.path), e.line]));
}

// What the operator changed, as HOCON lines `path = value` (null: send the whole text). A line
// showing a masked secret ("******") is never sent: the secret stays as it is.
export function changedLines(before, after) {
  const old = parseLines(before), now = parseLines(after);
  if (!now.parsed || !old.parsed) return null;
  const was = new Map(old.entries.filter((e) => e.value !== null).map((e) => [e.path.join('.'), e.value]));
  return now.entries
    .filter((e) => e.value !== null && e.value !== '"******"' && was.get(e.path.join('.')) !== e.value)
    .map((e) => `${e.path.join('.')} = ${e.value}`);
}

// the key an error names, and its line: the longest dotted name in the message the text has
export function locate(error, lines) {
  let best = null;
  for (const [candidate] of error.matchAll(/[A-Za-z_][\w-]*(?:\.[\w$-]+)+/g)) {
    const parts = candidate.split('.');
    for (let n = parts.length; n > 0; n--) {
      const key = parts.slice(0, n).join('.');
      if (lines.has(key)) {
        if (!best || key.length > best.key.length) best = { key, line: lines.get(key) };
        break;
      }
    }
    if (!best) best = { key: candidate, line: null };
  }
  return best;
}

// The gateway prints secrets as "******": such a line is left out of what is sent, so the secret stays
// as it is (sending it back would set the password to six stars).
export function withoutMaskedSecrets(text) {
  return text.split('\n').filter((line) => !/^\s*[\w"$-]+\s*=\s*"\*{6}"\s*$/.test(line)).join('\n');
}

// The body Validate and Apply send: the changed lines, or the whole text (masked secrets left out)
// when it is not in the gateway's one-value-per-line shape.
function body(before, after) {
  const lines = changedLines(before, after);
  return lines === null ? withoutMaskedSecrets(after) : lines.join('\n');
}

export function render(root) {
  const text = h('textarea', { id: 'config-text', rows: 30, spellcheck: 'false', wrap: 'off' });
  const gutter = h('pre', { id: 'config-gutter', class: 'gutter', 'aria-hidden': 'true' });
  const validate = h('button', { type: 'button', id: 'config-validate' }, 'Validate');
  const apply = h('button', { type: 'button', id: 'config-apply' }, 'Apply');
  const reload = h('button', { type: 'button', id: 'config-reload' }, 'Reload from files');
  const revert = h('button', { type: 'button', id: 'config-revert' }, 'Revert');
  const state = h('p', { id: 'config-state' });
  const errors = h('ul', { id: 'config-errors', class: 'errors' });
  replace(root, h('h2', {}, 'Config'),
    h('p', { class: 'muted' }, 'The effective config. Apply sends the values you changed to the node\'s overlay (what the config API keeps, over the config file) and reloads the node; deleting a line changes nothing. Secrets show as "******" and are kept as they are unless you type a new one. Reload from files re-reads the config file and the overlay.'),
    h('div', { class: 'toolbar' }, validate, apply, reload, revert), state, errors,
    h('div', { class: 'editor' }, gutter, text));

  let marked = new Map();
  let loaded = '';
  function paintGutter() {
    const count = text.value.split('\n').length;
    replace(gutter, Array.from({ length: count }, (_, i) => {
      const why = marked.get(i + 1);
      return h('span', { class: why ? 'err' : '', title: why || undefined }, `${String(i + 1).padStart(4)}${why ? ' ●' : '  '}\n`);
    }));
  }
  text.addEventListener('scroll', () => { gutter.scrollTop = text.scrollTop; });
  text.addEventListener('input', () => { if (marked.size) { marked = new Map(); } paintGutter(); });

  function goTo(line) {
    const all = text.value.split('\n');
    const start = all.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    text.focus();
    text.setSelectionRange(start, start + all[line - 1].length);
    text.scrollTop = Math.max(0, (line - 5) * 16);
  }

  function show(list) {
    const lines = keyLines(text.value);
    marked = new Map();
    replace(errors, list.map((error) => {
      const at = locate(error, lines);
      if (at && at.line) marked.set(at.line, error);
      const item = h('li', { class: 'error', 'data-key': at ? at.key : '', 'data-line': at && at.line ? at.line : '' },
        at && at.line ? h('a', { href: '#/config', class: 'at' }, `line ${at.line}`) : null, at && at.line ? ' ' : null,
        h('strong', {}, at ? at.key : 'config'), ': ', error);
      if (at && at.line) item.addEventListener('click', (event) => { event.preventDefault(); goTo(at.line); });
      return item;
    }));
    paintGutter();
  }

  async function load() {
    const answer = await get('/configs');
    if (!answer.ok) { state.className = 'error'; state.textContent = message(answer); return; }
    text.value = loaded = answer.data;
    marked = new Map();
    replace(errors);
    paintGutter();
  }

  validate.addEventListener('click', async () => {
    state.className = '';
    const sent = body(loaded, text.value);
    if (!sent.trim()) { state.className = 'muted'; state.textContent = 'Nothing changed.'; show([]); return; }
    state.textContent = 'Validating…';
    const answer = await api('POST', '/configs/validate?mode=merge', sent);
    if (answer.status === 404 && answer.data && answer.data.code === 'NOT_FOUND') {
      state.textContent = 'Validation is not available on this gateway: Apply checks the config before applying it.';
      return;
    }
    if (!answer.ok) { state.className = 'error'; state.textContent = message(answer); return; }
    if (answer.data.valid) {
      state.className = 'ok';
      state.textContent = 'The config is valid.';
      show([]);
    } else {
      state.className = 'error';
      state.textContent = `${answer.data.errors.length} error(s): nothing was applied.`;
      show(answer.data.errors);
    }
  });
  apply.addEventListener('click', async () => {
    state.className = '';
    const sent = body(loaded, text.value);
    if (!sent.trim()) { state.className = 'muted'; state.textContent = 'Nothing changed: nothing to apply.'; return; }
    state.textContent = 'Applying…';
    const answer = await api('PUT', '/configs?mode=merge', sent);
    if (answer.ok) {
      await load(); // the text is the effective config again before the page says so
      state.className = 'ok';
      state.textContent = `Applied: ${answer.data.status}.`;
    } else {
      state.className = 'error';
      state.textContent = 'Refused: nothing was applied.';
      show(answer.data && answer.data.errors ? answer.data.errors : [message(answer)]);
    }
  });
  reload.addEventListener('click', async () => {
    state.className = '';
    state.textContent = 'Reloading…';
    const answer = await api('POST', '/configs/reload');
    if (answer.ok) {
      await load();
      state.className = 'ok';
      state.textContent = `Reloaded from the files: ${answer.data.status}.`;
    } else {
      state.className = 'error';
      state.textContent = 'The reload was refused: the node runs as before.';
      show(answer.data && answer.data.errors ? answer.data.errors : [message(answer)]);
    }
  });
  revert.addEventListener('click', load);
  load();
  return () => {};
}
