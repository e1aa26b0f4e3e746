// Operations pages: the overview (/), topics (/topics, /topics/{name}) with a record
// browser, consumer groups (/groups) and alerts (/alerts).
'use strict';

// Rates from two scrapes of /metrics: {key -> per second}.
function rates(prev, cur, seconds, pick) {
  const out = new Map();
  const before = new Map(prev.map((m) => [m.name + JSON.stringify(m.labels), m.value]));
  for (const m of cur) {
    const key = pick(m);
    if (key === null) continue;
    const was = before.get(m.name + JSON.stringify(m.labels));
    const d = was === undefined ? 0 : Math.max(0, m.value - was);
    out.set(key, (out.get(key) || 0) + d / seconds);
  }
  return out;
}

function card(label, value, cls, id) {
  return h('div', { class: 'card ' + (cls || ''), id }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
}

function eventText(e) {
  if (e.kind === 'pipeline_state') return 'pipeline ' + e.pipeline + ': ' + (e.previous || '–') + ' → ' + e.state + (e.error ? ' (' + e.error + ')' : '');
  if (e.kind === 'checkpoint_completed') return 'checkpoint #' + e.checkpoint_id + ' in ' + e.duration_ms.toFixed(0) + ' ms, ' + fmtBytes(e.written_bytes) + ' (' + e.pipelines.join(', ') + ')';
  if (e.kind === 'checkpoint_failed') return 'checkpoint #' + e.checkpoint_id + ' FAILED: ' + e.error;
  return JSON.stringify(e);
}

Pages.push({
  pattern: /^\/$/, title: 'overview',
  render(main) {
    const health = h('section', { class: 'summary', id: 'health' });
    const ingest = h('tbody'); const rejected = h('tbody'); const lag = h('tbody'); const pipes = h('tbody');
    const events = h('ol', { id: 'events', class: 'events', 'aria-live': 'polite' });
    const canvas = h('canvas', { id: 'ingest-chart', role: 'img', 'aria-label': 'ingest rate over time' });
    main.append(h('h2', {}, 'Overview'), health,
      h('div', { class: 'grid' },
        h('section', { class: 'chart-box' }, h('h3', {}, 'Ingest, records/s'), h('div', { class: 'chart-small' }, canvas),
          table(['topic', 'transport', 'records/s'], [], { id: 'ingest' })),
        h('section', {}, h('h3', {}, 'Pipelines'), table(['pipeline', 'state', 'lag', 'last checkpoint'], [], { id: 'pipeline-health' }),
          h('h3', {}, 'Consumer lag'), table(['group', 'lag (records)'], [], { id: 'lag' }),
          h('h3', {}, 'Rejected records (dead-lettered), by field'), table(['topic', 'field', 'total'], [], { id: 'rejected' }))),
      h('section', {}, h('h3', {}, 'Processing events'), events));
    document.querySelector('#ingest tbody').replaceWith(ingest);
    document.querySelector('#pipeline-health tbody').replaceWith(pipes);
    document.querySelector('#lag tbody').replaceWith(lag);
    document.querySelector('#rejected tbody').replaceWith(rejected);
    const chart = new Chart(canvas, { type: 'line', data: { labels: [], datasets: [{ label: 'all topics', data: [], borderColor: cssVar('--series1'), pointRadius: 0, fill: false }] },
      options: { animation: false, maintainAspectRatio: false, scales: { y: { beginAtZero: true } }, plugins: { legend: { display: false } } } });
    let prev = null; let prevAt = 0;
    async function tick() {
      const [ready, healthz, metricsText, pl] = await Promise.all([
        fetch('/readyz').then((r) => r.json()), fetch('/healthz').then((r) => r.json()),
        fetch('/metrics').then((r) => (r.ok ? r.text() : '')), api('/v1/pipelines')]);
      const m = parseMetrics(metricsText);
      const failed = pl.pipelines.filter((p) => p.state === 'failed').length;
      const disk = healthz.disk;
      const freePct = disk ? disk.free_bytes / disk.capacity_bytes * 100 : null;
      const alerts = pl.pipelines.reduce((n, p) => n + (p.alerts || 0), 0);
      const firing = pl.pipelines.reduce((n, p) => n + (p.alerts_firing || 0), 0);
      health.replaceChildren(
        card('ready', ready.ready ? 'ready' : 'not ready', ready.ready ? 'ok' : 'bad', 'card-ready'),
        card('log', healthz.log.poisoned ? 'POISONED' : 'writable', healthz.log.poisoned ? 'bad' : 'ok', 'card-log'),
        card('disk free', disk ? fmtBytes(disk.free_bytes) + ' (' + freePct.toFixed(0) + ' %)' : '–', freePct !== null && freePct < 10 ? 'warn' : 'ok', 'card-disk'),
        card('pipelines', pl.pipelines.length + (failed ? ', ' + failed + ' failed' : ''), failed ? 'bad' : 'ok', 'card-pipelines'),
        card('alerts firing', fmtNum(firing) + ' (' + fmtNum(alerts) + ' fired)', firing ? 'warn' : 'ok', 'card-alerts'));
      const now = Date.now();
      if (prev) {
        const secs = (now - prevAt) / 1000;
        const r = rates(prev, m, secs, (x) => (x.name === 'sluice_ingest_records_total' ? x.labels.topic + '|' + x.labels.transport
          : x.name === 'sluice_kafka_produced_records_total' ? x.labels.topic + '|kafka' : null));
        ingest.replaceChildren(...[...r].sort().map(([k, v]) => { const [t, tr] = k.split('|'); return h('tr', { dataset: { topic: t, transport: tr } }, h('td', {}, link('/topics/' + encodeURIComponent(t), t)), cell(tr), cell(v.toFixed(1))); }));
        chart.data.labels.push(new Date(now).toISOString().slice(11, 19));
        chart.data.datasets[0].data.push([...r.values()].reduce((a, b) => a + b, 0));
        if (chart.data.labels.length > 90) { chart.data.labels.shift(); chart.data.datasets[0].data.shift(); }
        chart.update();
      }
      prev = m; prevAt = now;
      const rej = m.filter((x) => x.name === 'sluice_ingest_rejected_records_total');
      rejected.replaceChildren(...rej.map((x) => h('tr', {}, cell(x.labels.topic), cell(x.labels.field), cell(fmtNum(x.value)))));
      const byGroup = new Map();
      for (const x of m) if (x.name === 'sluice_group_lag_records') byGroup.set(x.labels.group, (byGroup.get(x.labels.group) || 0) + x.value);
      lag.replaceChildren(...[...byGroup].map(([g, v]) => h('tr', { dataset: { group: g } }, h('td', {}, link('/groups#' + encodeURIComponent(g), g)), cell(fmtNum(v)))));
      pipes.replaceChildren(...pl.pipelines.map((p) => h('tr', { dataset: { pipeline: p.name } }, h('td', {}, link('/pipelines/' + encodeURIComponent(p.name), p.name)),
        h('td', {}, stateBadge(p.state, p.error)), cell(fmtNum(p.lag_records)), cell(p.last_checkpoint_at ? ago(p.last_checkpoint_at) : '–'))));
      setStatus(true, 'live');
    }
    every(2000, () => tick().catch((e) => setStatus(false, e.message)));
    const show = (e) => {
      const d = JSON.parse(e.data);
      events.prepend(h('li', { dataset: { id: d.id, kind: d.kind } }, h('time', {}, fmtMs(d.time_ms)), ' ', eventText(d)));
      while (events.children.length > 30) events.lastChild.remove();
    };
    stream('/v1/events?last_event_id=0', { pipeline_state: show, checkpoint_completed: show, checkpoint_failed: show });
    return () => chart.destroy();
  },
});

// {"policy": "fsync"} or {"policy": "interval", "flush_interval_ms": N}.
function durability(d) {
  if (!d || typeof d !== 'object') return String(d);
  return d.policy === 'interval' ? 'fsync every ' + fmtNum(d.flush_interval_ms) + ' ms' : d.policy === 'fsync' ? 'fsync before every ack' : JSON.stringify(d);
}

Pages.push({
  pattern: /^\/topics$/, title: 'topics',
  async render(main) {
    const j = await api('/v1/topics');
    main.append(h('h2', {}, 'Topics'), table(['topic', 'partitions', 'records', 'size', 'segments', 'retention'], j.topics.map((t) => {
      const sum = (k) => t.partitions.reduce((n, p) => n + (p[k] || 0), 0);
      return h('tr', { dataset: { topic: t.name } }, h('td', {}, link('/topics/' + encodeURIComponent(t.name), t.name)), cell(t.partitions.length),
        cell(fmtNum(sum('high_watermark') - sum('log_start_offset'))), cell(fmtBytes(sum('size_bytes'))), cell(sum('segments')),
        cell(t.retention_ms < 0 ? 'forever' : (t.retention_ms / 3600000).toFixed(0) + ' h'));
    }), { id: 'topics' }));
    setStatus(true, 'live');
  },
});

Pages.push({
  pattern: /^\/topics\/([^/]+)$/, title: (m) => 'topic ' + m[1],
  async render(main, m) {
    const name = m[1];
    const t = await api('/v1/topics/' + encodeURIComponent(name));
    const dlq = name.endsWith('.dlq');
    main.append(h('p', { class: 'crumbs' }, link('/topics', 'Topics'), ' / ', name), h('h2', {}, 'Topic ', name),
      h('dl', { class: 'facts' }, h('dt', {}, 'retention'), h('dd', {}, t.retention_ms < 0 ? 'forever' : fmtNum(t.retention_ms) + ' ms'),
        h('dt', {}, 'retention bytes'), h('dd', {}, t.retention_bytes < 0 ? 'unlimited' : fmtBytes(t.retention_bytes)),
        h('dt', {}, 'max message'), h('dd', {}, fmtBytes(t.max_message_bytes)), h('dt', {}, 'durability'), h('dd', {}, durability(t.durability))),
      table(['partition', 'log start offset', 'high watermark', 'size', 'segments'], t.partitions.map((p) =>
        h('tr', {}, cell(p.partition), cell(fmtNum(p.log_start_offset)), cell(fmtNum(p.high_watermark)), cell(fmtBytes(p.size_bytes)), cell(p.segments))), { id: 'partitions' }));
    setStatus(true, 'live');
    if (!can('consume')) { main.append(h('p', { class: 'note' }, 'Browsing records needs the consume permission (operator).')); return; }
    const part = h('select', { id: 'browse-partition', 'aria-label': 'partition' }, t.partitions.map((p) => h('option', { value: p.partition }, 'partition ' + p.partition)));
    const from = h('input', { id: 'browse-offset', type: 'number', min: 0, value: 0, 'aria-label': 'from offset' });
    const at = h('input', { id: 'browse-time', type: 'datetime-local', step: 1, 'aria-label': 'from time (UTC)' });
    const out = h('div', { id: 'records' });
    const form = h('form', { class: 'inline', id: 'browse' }, h('h3', {}, 'Records'), part, h('label', {}, 'from offset ', from), h('label', {}, 'or from time (UTC) ', at), h('button', { type: 'submit' }, 'show'));
    main.append(form, out);
    async function show() {
      const q = new URLSearchParams({ max: 100 });
      if (at.value) q.set('timestamp_ms', Date.parse(at.value + 'Z')); else q.set('offset', from.value || 0);
      const r = await api('/v1/topics/' + encodeURIComponent(name) + '/partitions/' + part.value + '/records?' + q);
      const head = dlq ? ['offset', 'appended (UTC)', 'field', 'reason', 'record'] : ['offset', 'appended (UTC)', 'key', 'value'];
      out.replaceChildren(h('p', { class: 'note' }, r.records.length + ' records; log start ' + r.log_start_offset + ', high watermark ' + r.high_watermark),
        table(head, r.records.map((x) => h('tr', { dataset: { offset: x.offset } }, cell(x.offset), cell(fmtMs(x.timestamp_ms)),
          dlq ? [cell(x.value.field), h('td', { class: 'reason' }, x.value.reason), h('td', { class: 'json' }, x.value.record)]
            : [cell(x.key), h('td', { class: 'json' }, typeof x.value === 'string' ? x.value : JSON.stringify(x.value))])), { id: 'record-table' }));
    }
    form.addEventListener('submit', (e) => { e.preventDefault(); show().catch((x) => notice(out, x)); });
    await show();
    setStatus(true, 'live');
  },
});

Pages.push({
  pattern: /^\/groups$/, title: 'consumer groups',
  async render(main) {
    main.append(h('h2', {}, 'Consumer groups'));
    const list = h('div', { id: 'groups' });
    main.append(list);
    const load = async () => {
      const j = await api('/v1/groups');
      const groups = await Promise.all(j.groups.map((g) => api('/v1/groups/' + encodeURIComponent(g)).catch(() => null)));
      list.replaceChildren(...(groups.length ? [] : [h('p', { class: 'note' }, 'No consumer groups yet.')]), ...groups.filter(Boolean).map((g) => {
        const lag = g.offsets.reduce((n, o) => n + (o.lag || 0), 0);
        return h('section', { class: 'group', id: g.group, dataset: { group: g.group } },
          h('h3', {}, g.group, ' ', h('span', { class: 'badge' }, g.state || 'offsets only'), ' ', h('span', { class: 'note' }, 'lag ' + fmtNum(lag) + (g.generation !== undefined ? ', generation ' + g.generation : ''))),
          (g.members || []).length ? table(['member', 'client', 'host', 'assignment'], g.members.map((mb) => h('tr', {}, cell(mb.member_id), cell(mb.client_id), cell(mb.client_host),
            cell(mb.assignment.map((a) => a.topic + ' ' + JSON.stringify(a.partitions)).join(', '))))) : '',
          table(['topic', 'partition', 'committed', 'high watermark', 'lag'], g.offsets.map((o) => h('tr', {}, h('td', {}, link('/topics/' + encodeURIComponent(o.topic), o.topic)),
            cell(o.partition), cell(fmtNum(o.offset)), cell(fmtNum(o.high_watermark)), cell(fmtNum(o.lag))))));
      }));
      setStatus(true, 'live');
    };
    every(3000, () => load().catch((e) => setStatus(false, e.message)));
  },
});

Pages.push({
  pattern: /^\/alerts$/, title: 'alerts',
  async render(main) {
    const firingBody = h('tbody');
    const body = h('tbody');
    const ask = h('button', { type: 'button', id: 'notify' }, 'notify me in this browser');
    ask.addEventListener('click', () => Notification.requestPermission().then(() => { ask.hidden = Notification.permission === 'granted'; }));
    ask.hidden = !('Notification' in window) || Notification.permission === 'granted';
    const heads = ['since (UTC)', 'pipeline', 'rule', 'key', 'window', 'value', 'evidence'];
    main.append(h('h2', {}, 'Alerts'),
      h('p', { class: 'note' }, 'An alert fires when a key\'s row breaks a rule, and resolves at its next row that keeps it. New ones appear live.'), ask,
      h('h3', {}, 'Firing now'), h('div', { class: 'table-wrap' }, h('table', { id: 'firing' }, h('thead', {}, h('tr', {}, heads.map((x) => h('th', {}, x)))), firingBody)),
      h('h3', {}, 'History'), h('div', { class: 'table-wrap' }, h('table', { id: 'alerts' }, h('thead', {}, h('tr', {}, ['at (UTC)', 'state', ...heads.slice(1)].map((x) => h('th', {}, x)))), body)));
    const keyText = (a) => (typeof a.key === 'object' ? JSON.stringify(a.key) : String(a.key));
    const evidence = (a) => (a.state === 'resolved' ? 'fired ' + fmtMs(a.fired_at_ms) : a.threshold !== undefined ? a.direction + ' ' + a.threshold
      : 'mean ' + a.mean + ', stddev ' + a.stddev + ', z ' + a.z + ' over ' + a.samples);
    const cells = (a) => [h('td', {}, link('/pipelines/' + encodeURIComponent(a.pipeline), a.pipeline)), cell(a.rule), cell(keyText(a)),
      cell(fmtTime(a.window_start) + ' – ' + fmtTime(a.window_end).slice(11)), cell(a.value), cell(evidence(a))];
    const state = (a) => a.state || 'firing';
    const at = (a) => (state(a) === 'resolved' ? a.resolved_at_ms : a.fired_at_ms);
    const row = (a) => h('tr', { dataset: { pipeline: a.pipeline, rule: a.rule, state: state(a) } }, cell(fmtMs(at(a))), h('td', { class: 'alert-' + state(a) }, state(a)), ...cells(a));
    // The latest alert of each (pipeline, rule, key): firing ones are listed under "Firing now".
    const latest = new Map();
    const empty = (tb, cols, text) => { if (!tb.children.length) tb.append(h('tr', { class: 'empty' }, h('td', { colspan: cols }, text))); };
    const showFiring = () => {
      const rows = [...latest.values()].filter((a) => state(a) === 'firing').sort((a, b) => b.fired_at_ms - a.fired_at_ms)
        .map((a) => h('tr', { dataset: { pipeline: a.pipeline, rule: a.rule } }, cell(fmtMs(a.fired_at_ms)), ...cells(a)));
      firingBody.replaceChildren(...rows);
      empty(firingBody, 7, 'Nothing fires.');
    };
    const add = (a, live) => {
      const k = a.pipeline + '\u0000' + a.rule + '\u0000' + keyText(a);
      const was = latest.get(k);
      if (!was || at(was) <= at(a)) latest.set(k, a);
      if (live) { body.querySelector('tr.empty')?.remove(); body.prepend(row(a)); }
    };
    // Past alerts from the `alerts` topic (needs consume); live ones from `/v1/events`.
    if (can('consume')) {
      try {
        const t = await api('/v1/topics/alerts');
        const all = [];
        for (const p of t.partitions) {
          const from = Math.max(p.log_start_offset, p.high_watermark - 500);
          const r = await api('/v1/topics/alerts/partitions/' + p.partition + '/records?max=500&offset=' + from);
          all.push(...r.records.map((x) => x.value).filter((v) => v && typeof v === 'object'));
        }
        all.sort((a, b) => at(a) - at(b));
        for (const a of all) add(a, false);
        body.append(...all.reverse().map(row));
      } catch (e) { if (e.status !== 404) notice(main, e); }
    } else {
      main.insertBefore(h('p', { class: 'note' }, 'Past alerts are read from the alerts topic, which needs the consume permission (operator); new ones still appear here.'), ask);
    }
    showFiring();
    empty(body, 8, 'No alerts.');
    stream('/v1/events?kind=alert', {
      open: () => setStatus(true, 'live'),
      error: () => setStatus(false, 'reconnecting'),
      alert: (e) => {
        const a = JSON.parse(e.data);
        add(a, true);
        showFiring();
        if (state(a) === 'firing' && 'Notification' in window && Notification.permission === 'granted') {
          new Notification('sluice alert: ' + a.rule, { body: a.pipeline + ' ' + a.column + ' = ' + a.value });
        }
      },
    });
  },
});
