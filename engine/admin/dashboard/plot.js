// A small SVG line plot: a few series over time, its axis labelled at the ends. Written for the
// overview's hour of samples (360 points); no library.

const NS = 'http://www.w3.org/2000/svg';
const W = 480, H = 140, LEFT = 44, BOTTOM = 18, TOP = 8, RIGHT = 8;

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function short(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (n >= 1e3) return (n / 1e3).toFixed(1) + 'k';
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function clock(ms) {
  const d = new Date(ms);
  return d.toISOString().slice(11, 16);
}

// series: [{label, cls, points: [[ms, value], ...]}]
export function linePlot(title, series) {
  const figure = document.createElement('figure');
  figure.className = 'plot';
  const caption = document.createElement('figcaption');
  caption.textContent = title;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    const empty = svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'axis' });
    empty.textContent = 'no samples yet';
    root.append(empty);
  } else {
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
    const top = Math.max(1, ...all.map((p) => p[1]));
    const x = (t) => LEFT + (t1 === t0 ? 0 : ((t - t0) / (t1 - t0)) * (W - LEFT - RIGHT));
    const y = (v) => H - BOTTOM - (v / top) * (H - BOTTOM - TOP);
    root.append(svg('line', { x1: LEFT, y1: H - BOTTOM, x2: W - RIGHT, y2: H - BOTTOM, class: 'axis-line' }));
    root.append(svg('line', { x1: LEFT, y1: TOP, x2: LEFT, y2: H - BOTTOM, class: 'axis-line' }));
    const labels = [[LEFT - 4, TOP + 8, 'end', short(top)], [LEFT - 4, H - BOTTOM, 'end', '0'],
      [LEFT, H - 4, 'start', clock(t0)], [W - RIGHT, H - 4, 'end', clock(t1)]];
    for (const [lx, ly, anchor, text] of labels) {
      const label = svg('text', { x: lx, y: ly, 'text-anchor': anchor, class: 'axis' });
      label.textContent = text;
      root.append(label);
    }
    for (const s of series) {
      if (!s.points.length) continue;
      const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
      root.append(svg('path', { d, class: `series ${s.cls}` }));
    }
  }
  const legend = document.createElement('div');
  legend.className = 'legend';
  for (const s of series) {
    const item = document.createElement('span');
    item.className = `key ${s.cls}`;
    const last = s.points.length ? s.points[s.points.length - 1][1] : null;
    item.textContent = `${s.label}${last === null ? '' : ': ' + short(last)}`;
    legend.append(item);
  }
  figure.append(caption, root, legend);
  return figure;
}
