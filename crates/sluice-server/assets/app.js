// sluice dashboard: loads /v1/sessions, then follows /v1/sessions/stream (SSE).
'use strict';
const open = new Map();    // player_id -> [session]
const closed = new Map();  // "player|start" -> session
const key = (s) => s.player_id + '|' + s.session_start;
const minutes = (s) => (s / 60).toFixed(1);
const colors = { low: '#4caf50', moderate: '#ff9800', high: '#e53935' };

const chart = new Chart(document.getElementById('chart'), {
  type: 'bar',
  data: { labels: [], datasets: ['low', 'moderate', 'high'].map((z) => ({ label: z, data: [], backgroundColor: colors[z] })) },
  options: {
    indexAxis: 'y', animation: false, maintainAspectRatio: false,
    scales: { x: { stacked: true, title: { display: true, text: 'minutes' } }, y: { stacked: true } },
    plugins: { legend: { position: 'top' } },
  },
});

// With authentication on, a visitor who is not logged in is sent to the login page.
async function checkLogin() {
  const r = await fetch('/v1/whoami');
  if (r.status === 401) location.href = '/login';
}

async function load() {
  const r = await fetch('/v1/sessions');
  if (r.status === 401) { location.href = '/login'; return; }
  const j = await r.json();
  open.clear();
  closed.clear();
  for (const s of j.open) { if (!open.has(s.player_id)) open.set(s.player_id, []); open.get(s.player_id).push(s); }
  for (const s of j.closed) closed.set(key(s), s);
  schedule();
}

let pending = false;
function schedule() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); } }

function cell(text, cls) { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; return td; }

function render() {
  const all = [...closed.values(), ...[...open.values()].flat()];
  all.sort((a, b) => a.player_id.localeCompare(b.player_id) || a.session_start.localeCompare(b.session_start));
  const tbody = document.querySelector('#sessions tbody');
  tbody.replaceChildren(...all.map((s) => {
    const tr = document.createElement('tr');
    tr.className = s.closed ? 'closed' : 'open';
    tr.dataset.player = s.player_id;
    tr.dataset.status = s.closed ? 'closed' : 'open';
    tr.append(cell(s.player_id), cell(s.session_start.replace('T', ' ').slice(0, 19)), cell(s.session_end.replace('T', ' ').slice(0, 19)),
      cell(minutes(s.duration_s) + ' min'), cell(minutes(s.low_s)), cell(minutes(s.moderate_s)), cell(minutes(s.high_s)),
      cell(s.samples), cell(s.avg_hr.toFixed(0)), cell(s.closed ? 'closed' : 'open'));
    return tr;
  }));
  const players = new Map();
  for (const s of all) {
    const p = players.get(s.player_id) || { n: 0, low: 0, moderate: 0, high: 0 };
    p.n += 1; p.low += s.low_s; p.moderate += s.moderate_s; p.high += s.high_s;
    players.set(s.player_id, p);
  }
  document.querySelector('#players tbody').replaceChildren(...[...players].map(([id, p]) => {
    const tr = document.createElement('tr');
    tr.dataset.player = id;
    tr.append(cell(id), cell(p.n), cell(minutes(p.low)), cell(minutes(p.moderate)), cell(minutes(p.high)));
    return tr;
  }));
  document.getElementById('n-players').textContent = players.size;
  document.getElementById('n-closed').textContent = closed.size;
  document.getElementById('n-open').textContent = all.length - closed.size;
  document.getElementById('n-samples').textContent = all.reduce((n, s) => n + s.samples, 0);
  const shown = all.slice(-40);
  chart.data.labels = shown.map((s) => s.player_id + ' · ' + s.session_start.slice(0, 16).replace('T', ' ') + (s.closed ? '' : ' (open)'));
  for (const ds of chart.data.datasets) ds.data = shown.map((s) => +(s[ds.label + '_s'] / 60).toFixed(2));
  document.getElementById('chart-wrap').style.height = (80 + 28 * shown.length) + 'px';
  chart.update();
}

const statusEl = document.getElementById('status');
const es = new EventSource('/v1/sessions/stream');
es.onopen = () => { statusEl.textContent = 'live'; statusEl.className = 'status live'; load(); };
es.onerror = () => { statusEl.textContent = 'reconnecting…'; statusEl.className = 'status offline'; checkLogin(); };
es.addEventListener('session_update', (e) => {
  const d = JSON.parse(e.data);
  if (d.open.length) open.set(d.player_id, d.open); else open.delete(d.player_id);
  schedule();
});
es.addEventListener('session_closed', (e) => { const s = JSON.parse(e.data); closed.set(key(s), s); schedule(); });
es.addEventListener('resync', load);
