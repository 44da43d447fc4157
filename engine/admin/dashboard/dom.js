// Small DOM helpers: elements are built, never parsed from strings, so what a charge point sends
// (ids, vendor names, frames) is always text, never markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'value') el.value = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  return append(clear(el), children);
}

// A panel whose endpoint this gateway does not have: said plainly, not an error.
export function unavailable(what, path) {
  return h('p', { class: 'unavailable' }, `${what} not available: this gateway has no ${path}.`);
}

export function fmtTime(value) {
  if (!value) return '—';
  const date = typeof value === 'number' ? new Date(value) : new Date(String(value));
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function fmtNumber(n) {
  if (n === undefined || n === null) return '—';
  if (typeof n !== 'number') return String(n);
  return Number.isInteger(n) ? n.toLocaleString('en') : n.toFixed(2);
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}
