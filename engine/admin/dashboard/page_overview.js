// Overview: the node, charge points online, the last hour as plots, buffers, alarms.

import { get, missing, message } from './api.js';
import { h, replace, unavailable, fmtNumber, fmtTime } from './dom.js';
import { linePlot } from './plot.js';

const EVERY_MS = 10_000;

function card(title, value, id) {
  return h('div', { class: 'card', id }, h('div', { class: 'card-title' }, title), h('div', { class: 'card-value' }, value));
}

async function cards(root) {
  const [status, online, actions, connectors] = await Promise.all([
    get('/status'), get('/gateways/ocpp/clients?limit=1'), get('/actions'), get('/connectors')]);
  const items = [];
  if (status.ok) items.push(card('Node', `${status.data.node} (${status.data.status}, ${status.data.version})`, 'card-node'));
  items.push(card('Charge points online', online.ok ? fmtNumber(online.data.meta.count) : message(online), 'card-online'));
  if (actions.ok) {
    const buffered = actions.data.reduce((n, a) => n + (a.metrics.queuing || 0) + (a.metrics.inflight || 0), 0);
    items.push(card('Actions buffered', fmtNumber(buffered), 'card-buffered'));
  }
  if (connectors.ok) {
    const down = connectors.data.filter((c) => c.status !== 'connected').length;
    items.push(card('Connectors', `${connectors.data.length} (${down} not connected)`, 'card-connectors'));
  }
  replace(root, items);
}

async function plots(root) {
  const [monitor, current] = await Promise.all([get('/monitor?latest=3600'), get('/monitor_current')]);
  if (missing(monitor)) {
    replace(root, unavailable('The last hour', 'GET /api/v5/monitor'));
    return;
  }
  if (!monitor.ok) {
    replace(root, h('p', { class: 'error' }, message(monitor)));
    return;
  }
  const samples = Array.isArray(monitor.data) ? monitor.data : [];
  const points = (key) => samples.map((s) => [s.time_stamp, Number(s[key] || 0)]);
  const gauges = current.ok ? h('p', { class: 'gauges' },
    `bridge buffer: ${fmtNumber(current.data.bridge_buffered)} · actions buffer: ${fmtNumber(current.data.actions_buffered)}`) : null;
  replace(root,
    linePlot('Charge points connected', [{ label: 'connections', cls: 's1', points: points('connections') }]),
    linePlot('Messages per second', [
      { label: 'received', cls: 's1', points: points('received_msg_rate') },
      { label: 'sent', cls: 's2', points: points('sent_msg_rate') }]),
    linePlot('Dropped per second', [{ label: 'dropped', cls: 's3', points: points('dropped_msg_rate') }]),
    gauges);
}

async function alarms(root) {
  const answer = await get('/alarms?activated=true');
  if (missing(answer)) {
    replace(root, unavailable('Alarms', 'GET /api/v5/alarms'));
    return;
  }
  if (!answer.ok) {
    replace(root, h('p', { class: 'error' }, message(answer)));
    return;
  }
  const list = answer.data.data || [];
  if (!list.length) {
    replace(root, h('p', { class: 'ok' }, 'No active alarms.'));
    return;
  }
  replace(root, h('ul', { class: 'alarms' }, list.map((a) =>
    h('li', { class: 'alarm' }, h('strong', {}, a.name), ' — ', a.message, h('span', { class: 'muted' }, ` since ${fmtTime(a.activated_at)} on ${a.node || ''}`)))));
}

export function render(root) {
  const cardBox = h('div', { class: 'cards', id: 'overview-cards' }, 'Loading…');
  const plotBox = h('div', { class: 'plots', id: 'overview-plots' });
  const alarmBox = h('div', { id: 'overview-alarms' });
  replace(root, h('h2', {}, 'Overview'), cardBox, h('h3', {}, 'The last hour'), plotBox, h('h3', {}, 'Alarms'), alarmBox);
  const refresh = () => Promise.all([cards(cardBox), plots(plotBox), alarms(alarmBox)]);
  refresh();
  const timer = setInterval(refresh, EVERY_MS);
  return () => clearInterval(timer);
}
