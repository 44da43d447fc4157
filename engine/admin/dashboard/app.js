// The dashboard: log in, then one page at a time by the location's hash (#/clients/CP1).

import { api, whenLoggedOut } from './api.js';
import { h, replace } from './dom.js';
import * as overview from './page_overview.js';
import * as clients from './page_clients.js';
import * as client from './page_client.js';
import * as rules from './page_rules.js';
import * as actions from './page_actions.js';
import * as config from './page_config.js';

const main = document.getElementById('main');
const top = document.getElementById('top');
let leave = () => {};
let loggedIn = false;

function route() {
  const parts = (location.hash.replace(/^#\/?/, '') || 'overview').split('/').map(decodeURIComponent);
  if (parts[0] === 'clients' && parts.length > 1) return { page: client, name: 'clients', args: parts.slice(1).join('/') };
  const pages = { overview, clients, rules, actions, config };
  const name = pages[parts[0]] ? parts[0] : 'overview';
  return { page: pages[name], name, args: parts[1] };
}

function show() {
  leave();
  leave = () => {};
  if (!loggedIn) return;
  const { page, name, args } = route();
  for (const link of document.querySelectorAll('nav a')) link.classList.toggle('active', link.dataset.page === name);
  const root = h('section', { id: `page-${page === client ? 'client' : name}` });
  replace(main, root);
  leave = page.render(root, args) || (() => {});
}

function loginForm(notice) {
  loggedIn = false;
  leave();
  leave = () => {};
  top.hidden = true;
  const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert' }, notice || '');
  const form = h('form', { id: 'login', class: 'login' },
    h('h1', {}, 'ocpp-gateway'),
    h('label', {}, 'Username or API key', user),
    h('label', {}, 'Password or secret', pass),
    h('button', { type: 'submit', id: 'login-submit' }, 'Log in'),
    error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const answer = await api('POST', '/login', { username: user.value, password: pass.value }, { login: true });
    if (answer.ok) {
      start(answer.data.username);
    } else {
      error.textContent = (answer.data && answer.data.message) || `login failed (HTTP ${answer.status})`;
    }
  });
  replace(main, form);
  user.focus();
}

function start(username) {
  loggedIn = true;
  top.hidden = false;
  document.getElementById('who').textContent = username;
  show();
}

whenLoggedOut((why) => {
  if (loggedIn) loginForm(why || 'Your session has ended: log in again.');
});

document.getElementById('logout').addEventListener('click', async () => {
  await api('POST', '/logout');
  loginForm('Logged out.');
});

window.addEventListener('hashchange', show);

(async () => {
  const answer = await api('GET', '/session', undefined, { login: true });
  if (answer.ok && answer.data && answer.data.username) start(answer.data.username);
  else loginForm();
})();
