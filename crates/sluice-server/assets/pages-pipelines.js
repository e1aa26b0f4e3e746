// Pipelines: the list with health and actions (/pipelines) and one pipeline's page
// (/pipelines/{name}): its SQL, state, rates, watermark, checkpoints, state size, and its
// output updating live (a chart over time for windowed output, a table otherwise).
// Buttons follow the role: operators drain, managers and admins also create and drop.
'use strict';

function stateBadge(state, error) {
  return h('span', { class: 'badge state-' + state, title: error || state }, state === 'failed' ? '✖ failed' : state === 'running' ? '● running' : state);
}

async function pipelineAction(name, action, btn) {
  btn.disabled = true;
  const old = btn.textContent;
  btn.textContent = action === 'drain' ? 'draining…' : 'dropping…';
  try {
    if (action === 'drain') await api('/v1/pipelines/' + encodeURIComponent(name) + '/drain', { method: 'POST' });
    else await api('/v1/pipelines/' + encodeURIComponent(name), { method: 'DELETE' });
    btn.textContent = action === 'drain' ? 'drained' : 'dropped';
    btn.dataset.done = 'true';
    // A dropped pipeline's own page has nothing left to show.
    if (action === 'drop' && location.pathname !== '/pipelines') { history.pushState(null, '', '/pipelines'); route(true); return false; }
    setTimeout(() => { btn.textContent = old; btn.disabled = false; }, 1500);
    return true;
  } catch (e) {
    btn.textContent = old; btn.disabled = false;
    alert(action + ' failed: ' + e.message);
    return false;
  }
}

function actions(p, after) {
  const out = [];
  if (can('operate')) {
    const b = h('button', { type: 'button', class: 'drain', 'data-pipeline': p.name }, 'drain');
    b.addEventListener('click', async () => { if (await pipelineAction(p.name, 'drain', b) && after) after(); });
    out.push(b);
  }
  if (can('manage') && !p.configured) {
    const b = h('button', { type: 'button', class: 'drop danger', 'data-pipeline': p.name }, 'drop');
    b.addEventListener('click', async () => {
      if (confirm('Drop pipeline ' + p.name + '? Its state is forgotten; its table and topics stay.') && await pipelineAction(p.name, 'drop', b) && after) after();
    });
    out.push(b);
  }
  return out;
}

// Action cells are kept across refreshes, so a button keeps its state while the table
// redraws around it.
const actionCells = new Map();
function actionCell(p, reload) {
  const key = p.name + '|' + p.configured;
  if (!actionCells.has(key)) actionCells.set(key, h('td', { class: 'actions' }, actions(p, reload)));
  return actionCells.get(key);
}

function pipelineRow(p, reload) {
  return h('tr', { dataset: { pipeline: p.name, state: p.state } },
    h('td', {}, link('/pipelines/' + encodeURIComponent(p.name), p.name)), h('td', {}, stateBadge(p.state, p.error)),
    cell(p.source), cell(fmtNum(p.records)), cell(fmtNum(p.lag_records)), cell(fmtNum(p.late_records)), cell(fmtTime(p.watermark)),
    cell(p.last_checkpoint_id ? '#' + p.last_checkpoint_id + ', ' + ago(p.last_checkpoint_at) : '–'), cell(fmtBytes(p.state_bytes)), cell(fmtNum(p.alerts)),
    actionCell(p, reload));
}

Pages.push({
  pattern: /^\/pipelines$/, title: 'pipelines',
  render(main) {
    actionCells.clear();
    const body = h('tbody');
    main.append(h('h2', {}, 'Pipelines'),
      h('div', { class: 'table-wrap' }, h('table', { id: 'pipelines' },
        h('thead', {}, h('tr', {}, ['pipeline', 'state', 'source', 'records', 'lag', 'late', 'watermark (UTC)', 'last checkpoint', 'state size', 'alerts', ''].map((x) => h('th', {}, x)))), body)));
    const load = async () => {
      const j = await api('/v1/pipelines');
      body.replaceChildren(...j.pipelines.map((p) => pipelineRow(p, load)));
      setStatus(true, 'live');
    };
    if (can('manage')) {
      const name = h('input', { id: 'new-name', placeholder: 'name', required: true, 'aria-label': 'pipeline name' });
      const sql = h('textarea', { id: 'new-sql', rows: 5, placeholder: 'SELECT … FROM TUMBLE("topic", "time", INTERVAL \'1\' MINUTE) GROUP BY …', required: true, 'aria-label': 'pipeline SQL' });
      const err = h('p', { class: 'error', role: 'alert' });
      const form = h('form', { id: 'create', class: 'stack' }, h('h3', {}, 'Create a pipeline'), name, sql, err, h('button', { type: 'submit' }, 'create'));
      form.addEventListener('submit', async (e) => {
        e.preventDefault(); err.textContent = '';
        try {
          await api('/v1/pipelines', { method: 'POST', body: { name: name.value, sql: sql.value } });
          name.value = ''; sql.value = ''; await load();
        } catch (x) {
          const b = x.body && x.body.error;
          err.textContent = b && b.line ? 'line ' + b.line + ', column ' + b.column + ': ' + b.message : x.message;
        }
      });
      main.append(form);
    }
    every(2000, () => load().catch((e) => setStatus(false, e.message)));
  },
});

// Charts windowed output (rows with window_start) over time: one line per key and
// numeric column picked in the selector.
function outputView(container, p) {
  const cols = (p.schema || []).map((c) => c.name);
  const windowed = cols.includes('window_start');
  const numeric = (p.schema || []).filter((c) => /^(Int|UInt|Float|Decimal)/.test(c.type)).map((c) => c.name);
  const keyCols = (p.schema || []).filter((c) => c.type === 'Utf8').map((c) => c.name);
  const rows = [];
  const tbody = h('tbody');
  const tableEl = h('div', { class: 'table-wrap' }, h('table', { id: 'output' }, h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c)))), tbody));
  let chart = null;
  let pick = null;
  if (windowed && numeric.length) {
    pick = h('select', { id: 'output-column', 'aria-label': 'column to chart' }, numeric.map((c) => h('option', { value: c }, c)));
    const canvas = h('canvas', { id: 'output-chart', role: 'img', 'aria-label': 'output over time' });
    container.append(h('label', {}, 'chart column ', pick), h('div', { class: 'chart-wide' }, canvas));
    chart = new Chart(canvas, { type: 'line', data: { datasets: [] }, options: { animation: false, maintainAspectRatio: false, parsing: false,
      scales: { x: { type: 'linear', ticks: { callback: (v) => new Date(v).toISOString().slice(11, 19) } } }, plugins: { legend: { position: 'top' } } } });
    pick.addEventListener('change', () => redraw());
  }
  container.append(tableEl);
  const palette = ['--series1', '--series2', '--series3', '--series4', '--series5', '--series6'];
  function redraw() {
    tbody.replaceChildren(...rows.slice(-50).reverse().map((r) => h('tr', {}, cols.map((c) => cell(typeof r[c] === 'object' && r[c] !== null ? JSON.stringify(r[c]) : r[c])))));
    if (!chart) return;
    const col = pick.value;
    const series = new Map();
    for (const r of rows) {
      const key = keyCols.map((k) => r[k]).join(' · ') || col;
      if (!series.has(key)) series.set(key, []);
      series.get(key).push({ x: Date.parse(r.window_start), y: r[col] });
    }
    chart.data.datasets = [...series].slice(0, 12).map(([k, pts], i) => ({ label: k, data: pts.sort((a, b) => a.x - b.x), borderColor: cssVar(palette[i % palette.length]), pointRadius: 2 }));
    chart.update();
  }
  return {
    add(newRows) { rows.push(...newRows); if (rows.length > 2000) rows.splice(0, rows.length - 2000); redraw(); },
    destroy() { if (chart) chart.destroy(); },
  };
}

Pages.push({
  pattern: /^\/pipelines\/([^/]+)$/, title: (m) => 'pipeline ' + m[1],
  async render(main, m) {
    const name = m[1];
    const p = await api('/v1/pipelines/' + encodeURIComponent(name));
    const facts = h('dl', { class: 'facts', id: 'facts' });
    const head = h('div', { class: 'title-row' }, h('h2', {}, 'Pipeline ', name), h('span', { id: 'state' }), h('span', { class: 'actions' }, actions(p, () => refresh())));
    const out = h('section', { id: 'live-output' }, h('h3', {}, 'Output (live)'));
    main.append(h('p', { class: 'crumbs' }, link('/pipelines', 'Pipelines'), ' / ', name), head,
      h('p', { class: 'error', id: 'error', role: 'alert' }), facts,
      h('details', { open: true }, h('summary', {}, 'SQL'), h('pre', { id: 'sql' }, p.sql)), out);
    let prev = null;
    async function refresh() {
      const d = await api('/v1/pipelines/' + encodeURIComponent(name));
      const now = Date.now();
      const rate = prev ? ((d.records - prev.records) / ((now - prev.t) / 1000)) : null;
      prev = { records: d.records, t: now };
      document.getElementById('state').replaceChildren(stateBadge(d.state, d.error));
      document.getElementById('error').textContent = d.error ? 'Error: ' + d.error : '';
      const delay = d.watermark ? Math.max(0, (now - Date.parse(d.watermark)) / 1000) : null;
      const rowsOf = [
        ['source', link('/topics/' + encodeURIComponent(d.source), d.source)], ['outputs', d.outputs.join(', ')],
        ['input rate', rate === null ? '–' : rate.toFixed(1) + ' records/s'], ['records read', fmtNum(d.records)], ['lag', fmtNum(d.lag_records) + ' records'],
        ['watermark', d.watermark ? fmtTime(d.watermark) + ' UTC' : '–'], ['watermark delay', delay === null ? '–' : delay < 172800 ? delay.toFixed(0) + ' s' : (delay / 86400).toFixed(0) + ' days'],
        ['late records', fmtNum(d.late_records)], ['duplicates', fmtNum(d.duplicate_records)], ['invalid records', fmtNum(d.invalid_records)],
        ['last checkpoint', d.last_checkpoint_id ? '#' + d.last_checkpoint_id + ' at ' + fmtTime(d.last_checkpoint_at) + ' UTC (' + ago(d.last_checkpoint_at) + ')' : '–'],
        ['state', fmtNum(d.state_keys) + ' keys, ' + fmtNum(d.open_windows) + ' open windows, ' + fmtBytes(d.state_bytes)],
        ['output rows', fmtNum(d.output_rows)], ['alerts', fmtNum(d.alerts)],
      ];
      facts.replaceChildren(...rowsOf.flatMap(([k, v]) => [h('dt', {}, k), h('dd', { dataset: { fact: k } }, v)]));
      return d;
    }
    every(2000, () => refresh().catch((e) => setStatus(false, e.message)));
    // Checkpoint events of this pipeline refresh the facts at once.
    stream('/v1/events?pipeline=' + encodeURIComponent(name), { checkpoint_completed: () => refresh().catch(() => {}), pipeline_state: () => refresh().catch(() => {}) });
    const view = outputView(out, p);
    // `recent` holds {output, row} of every output (rollup levels too); the view shows the first.
    if (p.recent) view.add(p.recent.filter((x) => x.output === p.outputs[0]).map((x) => x.row));
    else out.append(h('p', { class: 'note' }, p.recent_hidden || 'Rows are not shown.'));
    stream('/v1/pipelines/' + encodeURIComponent(name) + '/stream', {
      open: () => setStatus(true, 'live'), error: () => setStatus(false, 'reconnecting…'),
      result: (e) => { const d = JSON.parse(e.data); if (d.output === p.outputs[0]) view.add(d.rows); },
    });
    return () => view.destroy();
  },
});
