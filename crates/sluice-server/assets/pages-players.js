// Players: every player's sessions and minutes per zone (/players), and one player's page
// (/players/{id}): a live heart-rate line coloured by zone, the open session's zones as a
// stacked bar, and past sessions with paging.
// Both follow /v1/sessions/stream (SSE) and reload /v1/sessions when it (re)opens.
'use strict';

const minutes = (s) => (s / 60).toFixed(1);
const sessionKey = (s) => s.player_id + '|' + s.session_start;

function zoneColors() { return Object.fromEntries(Zones.map((z) => [z, cssVar('--' + z)])); }

function zoneChart(canvas, horizontal) {
  const colors = zoneColors();
  const chart = new Chart(canvas, {
    type: 'bar',
    data: { labels: [], datasets: Zones.map((z, i) => ({ label: z, data: [], backgroundColor: colors[z], borderColor: cssVar('--ink'), borderWidth: i === 1 ? 1 : 0 })) },
    options: {
      indexAxis: horizontal ? 'y' : 'x', animation: false, maintainAspectRatio: false,
      scales: { x: { stacked: true, title: { display: horizontal, text: 'minutes' } }, y: { stacked: true, title: { display: !horizontal, text: 'minutes' } } },
      plugins: { legend: { position: 'top' } },
    },
  });
  const recolor = () => { const c = zoneColors(); for (const ds of chart.data.datasets) ds.backgroundColor = c[ds.label]; chart.update(); };
  window.addEventListener('themechange', recolor);
  chart.$off = () => window.removeEventListener('themechange', recolor);
  return chart;
}

function sessionRow(s) {
  return h('tr', { class: s.closed ? 'closed' : 'open', dataset: { player: s.player_id, status: s.closed ? 'closed' : 'open' } },
    h('td', {}, link('/players/' + encodeURIComponent(s.player_id), s.player_id)), cell(fmtTime(s.session_start)), cell(fmtTime(s.session_end)),
    cell(minutes(s.duration_s) + ' min'), cell(minutes(s.low_s)), cell(minutes(s.moderate_s)), cell(minutes(s.high_s)),
    cell(s.samples), cell(s.avg_hr.toFixed(0)), cell(s.closed ? 'closed' : 'open'));
}
const SESSION_HEAD = ['player', 'start (UTC)', 'end (UTC)', 'duration', ['low min', { class: 'low' }], ['moderate min', { class: 'moderate' }], ['high min', { class: 'high' }], 'readings', 'avg bpm', 'status'];
const ZONE_NOTE = 'Zones by fraction of HRmax (ACSM): low < 64 %, moderate 64–76 %, high ≥ 77 %. Open sessions update live and may still grow.';

// Follows the sessions stream; `apply(open, closed)` redraws (batched per animation frame).
// With `limit`, only the newest `limit` closed sessions are loaded; `onLoad(page)` sees
// each page loaded (its `next` cursor pages further).
function followSessions(player, apply, limit, onLoad) {
  const open = new Map(); const closed = new Map();
  let pending = false;
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; apply(open, closed); }); } };
  const load = async () => {
    const q = new URLSearchParams();
    if (player) q.set('player', player);
    if (limit) q.set('limit', limit);
    const j = await api('/v1/sessions' + (q.size ? '?' + q : ''));
    if (onLoad) onLoad(j);
    open.clear(); closed.clear();
    for (const s of j.open) { if (!open.has(s.player_id)) open.set(s.player_id, []); open.get(s.player_id).push(s); }
    for (const s of j.closed) closed.set(sessionKey(s), s);
    schedule();
    return j;
  };
  // The first open loads the page; a reconnect resumes from the last event id (the server
  // replays what changed meanwhile), and `resync` (too much missed) loads it again.
  let loaded = false;
  // A player's page takes each of its updates; the page of every player takes one per
  // player per 250 ms (the server merges them), so it keeps up at any ingest rate.
  stream('/v1/sessions/stream' + (player ? '?player=' + encodeURIComponent(player) : '?merge_ms=250'), {
    open: () => { setStatus(true, 'live'); if (!loaded) { loaded = true; load().catch(() => {}); } },
    error: () => setStatus(false, 'reconnecting…'),
    session_update: (e) => {
      const d = JSON.parse(e.data);
      if (player && d.player_id !== player) return;
      if (d.open.length) open.set(d.player_id, d.open); else open.delete(d.player_id);
      schedule();
    },
    session_closed: (e) => { const s = JSON.parse(e.data); if (!player || s.player_id === player) { closed.set(sessionKey(s), s); schedule(); } },
    resync: () => load().catch(() => {}),
  });
  return load;
}

Pages.push({
  pattern: /^\/players$/, title: 'players',
  render(main) {
    const filter = h('input', { type: 'search', id: 'player-filter', placeholder: 'filter players', 'aria-label': 'filter players' });
    main.append(
      h('h2', {}, 'Players'),
      h('section', { class: 'summary' },
        ['players', 'closed', 'open', 'samples'].map((k) => h('div', { class: 'card' }, h('div', { class: 'label' }, { players: 'players', closed: 'sessions closed', open: 'sessions open', samples: 'readings' }[k]), h('div', { class: 'value', id: 'n-' + k }, '0')))),
      h('section', {}, h('h3', {}, 'Minutes per zone, by player'), filter,
        table(['player', 'sessions', ['low', { class: 'low' }], ['moderate', { class: 'moderate' }], ['high', { class: 'high' }]], [], { id: 'players' })),
      h('section', { class: 'chart-box' }, h('h3', {}, 'Minutes per zone, by session'), h('div', { id: 'chart-wrap' }, h('canvas', { id: 'chart', role: 'img', 'aria-label': 'minutes per zone by session' }))),
      h('section', {}, h('h3', {}, 'Sessions'), h('p', { class: 'note' }, ZONE_NOTE), table(SESSION_HEAD, [], { id: 'sessions' })));
    const chart = zoneChart(document.getElementById('chart'), true);
    const apply = (open, closed) => {
      const all = [...closed.values(), ...[...open.values()].flat()];
      all.sort((a, b) => a.player_id.localeCompare(b.player_id) || a.session_start.localeCompare(b.session_start));
      const q = filter.value.trim().toLowerCase();
      const shownAll = q ? all.filter((s) => s.player_id.toLowerCase().includes(q)) : all;
      document.querySelector('#sessions tbody').replaceChildren(...shownAll.map(sessionRow));
      const players = new Map();
      for (const s of shownAll) {
        const p = players.get(s.player_id) || { n: 0, low: 0, moderate: 0, high: 0 };
        p.n += 1; p.low += s.low_s; p.moderate += s.moderate_s; p.high += s.high_s;
        players.set(s.player_id, p);
      }
      document.querySelector('#players tbody').replaceChildren(...[...players].map(([id, p]) =>
        h('tr', { dataset: { player: id } }, h('td', {}, link('/players/' + encodeURIComponent(id), id)), cell(p.n), cell(minutes(p.low)), cell(minutes(p.moderate)), cell(minutes(p.high)))));
      document.getElementById('n-players').textContent = players.size;
      document.getElementById('n-closed').textContent = shownAll.filter((s) => s.closed).length;
      document.getElementById('n-open').textContent = shownAll.filter((s) => !s.closed).length;
      document.getElementById('n-samples').textContent = shownAll.reduce((n, s) => n + s.samples, 0);
      const shown = shownAll.slice(-40);
      chart.data.labels = shown.map((s) => s.player_id + ' · ' + s.session_start.slice(0, 16).replace('T', ' ') + (s.closed ? '' : ' (open)'));
      for (const ds of chart.data.datasets) ds.data = shown.map((s) => +(s[ds.label + '_s'] / 60).toFixed(2));
      document.getElementById('chart-wrap').style.height = (80 + 28 * shown.length) + 'px';
      chart.update();
    };
    let last = [new Map(), new Map()];
    followSessions(null, (o, c) => { last = [o, c]; apply(o, c); });
    filter.addEventListener('input', () => apply(...last));
    return () => { chart.$off(); chart.destroy(); };
  },
});

// A player's readings (/v1/players/{id}/readings, SSE) as a line whose segments take the
// zone colour of the reading they lead to; the last 10 minutes of event time are kept.
const LINE_MS = 10 * 60 * 1000;
function heartRateLine(canvas, id) {
  const zones = [];
  const pts = [];
  const colors = zoneColors();
  const chart = new Chart(canvas, {
    type: 'line',
    data: { datasets: [{ label: 'bpm', data: pts, borderWidth: 2, pointRadius: 0, tension: 0, segment: { borderColor: (c) => colors[zones[c.p1DataIndex]] } }] },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
      scales: { x: { type: 'linear', ticks: { maxTicksLimit: 6, callback: (v) => new Date(v).toISOString().slice(11, 19) }, title: { display: true, text: 'event time (UTC)' } },
        y: { title: { display: true, text: 'bpm' }, suggestedMin: 60, suggestedMax: 190 } },
      plugins: { legend: { display: false }, tooltip: { callbacks: { title: (items) => fmtMs(items[0].parsed.x), label: (c) => c.parsed.y + ' bpm, ' + zones[c.dataIndex] } } },
    },
  });
  let pending = false;
  const draw = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; chart.update(); }); } };
  const recolor = () => { Object.assign(colors, zoneColors()); draw(); };
  window.addEventListener('themechange', recolor);
  const note = document.getElementById('line-note');
  stream('/v1/players/' + encodeURIComponent(id) + '/readings', {
    readings: (e) => {
      const d = JSON.parse(e.data);
      for (const [t, bpm, zone] of d.readings) {
        // Readings arrive in log order; one sent late is placed by event time.
        let i = pts.length;
        while (i > 0 && pts[i - 1].x > t) i -= 1;
        pts.splice(i, 0, { x: t, y: bpm }); zones.splice(i, 0, zone);
      }
      const newest = pts.length ? pts[pts.length - 1].x : 0;
      let cut = 0;
      while (cut < pts.length && pts[cut].x < newest - LINE_MS) cut += 1;
      if (cut) { pts.splice(0, cut); zones.splice(0, cut); }
      const last = pts[pts.length - 1];
      if (last) {
        note.textContent = last.y + ' bpm at ' + fmtMs(last.x) + ' UTC, ' + zones[zones.length - 1] + ' zone (HRmax ' + d.hr_max_bpm + ').';
        note.dataset.bpm = last.y; note.dataset.zone = zones[zones.length - 1]; note.dataset.readings = pts.length;
      }
      draw();
    },
  });
  chart.$off = () => window.removeEventListener('themechange', recolor);
  return chart;
}

Pages.push({
  pattern: /^\/players\/(.+)$/, title: (m) => 'player ' + m[1],
  render(main, m) {
    const id = m[1];
    const pageSize = 20;
    main.append(
      h('p', { class: 'crumbs' }, link('/players', 'Players'), ' / ', id),
      h('h2', {}, 'Player ', h('span', { id: 'player-id' }, id)),
      h('section', { class: 'chart-box' }, h('h3', {}, 'Heart rate, live'), h('p', { class: 'note', id: 'line-note' }, 'No readings in the last 5 minutes.'),
        h('div', { class: 'chart-line' }, h('canvas', { id: 'hr-line', role: 'img', 'aria-label': 'heart rate over time, coloured by zone' })),
        h('p', { class: 'legend' }, Zones.map((z) => h('span', { class: 'key ' + z }, z)))),
      h('section', { class: 'chart-box' }, h('h3', {}, 'Open session: minutes per zone'), h('p', { class: 'note', id: 'open-note' }, 'No open session.'),
        h('div', { class: 'chart-small' }, h('canvas', { id: 'open-chart', role: 'img', 'aria-label': 'open session minutes per zone' }))),
      h('section', {}, h('h3', {}, 'Sessions'), h('p', { class: 'note' }, ZONE_NOTE), table(SESSION_HEAD, [], { id: 'sessions' }),
        h('div', { class: 'pager' }, h('button', { type: 'button', id: 'older', disabled: true }, 'older sessions'))));
    const chart = zoneChart(document.getElementById('open-chart'), true);
    const line = heartRateLine(document.getElementById('hr-line'), id);
    let older = [];   // closed sessions from later pages
    let next = null;
    const apply = (open, closed) => {
      const mine = open.get(id) || [];
      const past = new Map([...closed.values(), ...older].map((x) => [sessionKey(x), x]));
      const rows = [...mine, ...[...past.values()].sort((a, b) => b.session_end.localeCompare(a.session_end))];
      document.querySelector('#sessions tbody').replaceChildren(...rows.map(sessionRow));
      const s = mine[mine.length - 1];
      document.getElementById('open-note').textContent = s ? 'Since ' + fmtTime(s.session_start) + ' UTC, ' + s.samples + ' readings, avg ' + s.avg_hr.toFixed(0) + ' bpm (HRmax ' + s.hr_max + ').' : 'No open session.';
      chart.data.labels = s ? ['open session'] : [];
      for (const ds of chart.data.datasets) ds.data = s ? [+(s[ds.label + '_s'] / 60).toFixed(2)] : [];
      chart.update();
    };
    const olderBtn = document.getElementById('older');
    const load = followSessions(id, apply, pageSize, (j) => { if (!older.length) { next = j.next; olderBtn.disabled = !next; } });
    olderBtn.addEventListener('click', async () => {
      if (!next) return;
      const j = await api('/v1/sessions?player=' + encodeURIComponent(id) + '&limit=' + pageSize + '&before=' + encodeURIComponent(next));
      older = older.concat(j.closed); next = j.next; olderBtn.disabled = !next;
      load().catch(() => {});
    });
    return () => { chart.$off(); chart.destroy(); line.$off(); line.destroy(); };
  },
});
