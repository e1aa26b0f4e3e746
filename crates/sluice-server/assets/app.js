// sluice dashboard: the shell shared by every page (router, navigation, who is signed in,
// theme, API and SSE helpers). Pages register themselves in `Pages` (pages-*.js) and are
// picked by location.pathname, so every page has a URL a person can bookmark and share.
'use strict';

const Pages = [];  // [{ pattern: RegExp, title, render(main, match) -> cleanup? }]
const Zones = ['low', 'moderate', 'high'];

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

function table(headers, rows, attrs) {
  return h('div', { class: 'table-wrap' }, h('table', attrs || {},
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', typeof x === 'string' ? {} : x[1], typeof x === 'string' ? x : x[0])))),
    h('tbody', {}, rows)));
}

function cell(text, cls) { return h('td', { class: cls }, text === null || text === undefined ? '–' : text); }
function link(href, text) { return h('a', { href }, text); }
function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KB', 'MB', 'GB', 'TB']; let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i += 1; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + ' ' + u[i];
}
function fmtNum(n) { return n === null || n === undefined ? '–' : Number(n).toLocaleString('en'); }
function fmtTime(t) { return t ? String(t).replace('T', ' ').slice(0, 19) : '–'; }
// Epoch ms as `YYYY-MM-DD hh:mm:ss` (UTC); '–' for a missing or impossible time.
function fmtMs(ms) { const d = new Date(ms); return ms === null || ms === undefined || Number.isNaN(d.getTime()) ? '–' : fmtTime(d.toISOString()); }
function ago(iso) {
  if (!iso) return '–';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? s + ' s ago' : s < 7200 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
}

// The signed-in principal (`/v1/whoami`); with authentication off, everything is allowed.
const Me = { user: null, role: 'admin', permissions: ['read', 'produce', 'consume', 'operate', 'manage', 'admin'], auth: false };
function can(p) { return Me.permissions.includes(p); }

async function api(path, opts) {
  const o = Object.assign({ headers: {} }, opts || {});
  if (o.body && typeof o.body !== 'string') { o.body = JSON.stringify(o.body); o.headers['Content-Type'] = 'application/json'; }
  if (o.method && o.method !== 'GET') {
    const csrf = sessionStorage.getItem('sluice_csrf');
    if (csrf) o.headers['X-CSRF-Token'] = csrf;
  }
  const r = await fetch(path, o);
  if (r.status === 401) { location.href = '/login'; throw new Error('signed out'); }
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!r.ok) {
    const err = new Error((body && body.error && body.error.message) || r.status + ' ' + r.statusText);
    err.status = r.status; err.body = body;
    throw err;
  }
  return body;
}

// Prometheus text → [{name, labels, value}] (for rates the overview computes itself).
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const p of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

// An EventSource that is closed when the page changes. The browser resends the last
// event id on reconnect, so streams with ids (`/v1/events`) resume with no gap.
const live = { sources: [], timers: [] };
function stream(url, handlers) {
  const es = new EventSource(url);
  for (const [name, fn] of Object.entries(handlers)) {
    if (name === 'open') es.onopen = fn; else if (name === 'error') es.onerror = fn; else es.addEventListener(name, fn);
  }
  live.sources.push(es);
  return es;
}
function every(ms, fn) { fn(); live.timers.push(setInterval(fn, ms)); }

function setStatus(ok, text) {
  const el = document.getElementById('status');
  el.textContent = text; el.className = 'status ' + (ok ? 'live' : 'offline');
}

function notice(main, err) {
  main.append(h('p', { class: 'error', role: 'alert' }, err.status === 403 ? 'Not allowed: ' + err.message : String(err.message || err)));
}

let cleanup = null;
// Shows the page of location.pathname. After an in-app navigation (`moved`), focus goes to
// the page's content, as a screen reader expects after following a link.
async function route(moved) {
  for (const es of live.sources) es.close();
  for (const t of live.timers) clearInterval(t);
  live.sources = []; live.timers = [];
  if (cleanup) { try { cleanup(); } catch (_) { /* ignore */ } cleanup = null; }
  const path = decodeURIComponent(location.pathname.replace(/\/+$/, '')) || '/';
  const main = document.getElementById('main');
  main.replaceChildren();
  for (const a of document.querySelectorAll('nav a')) {
    const here = a.getAttribute('href') === '/' ? path === '/' : path.startsWith(a.getAttribute('href'));
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  for (const p of Pages) {
    const m = path.match(p.pattern);
    if (!m) continue;
    document.title = 'sluice — ' + (typeof p.title === 'function' ? p.title(m) : p.title);
    try { cleanup = (await p.render(main, m)) || null; } catch (e) { notice(main, e); }
    if (moved === true) main.focus({ preventScroll: true });
    return;
  }
  main.append(h('h2', {}, 'Not found'), h('p', {}, 'No page at ' + path + '.'));
}

// Links inside the app change the page without reloading it.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || a.target || e.ctrlKey || e.metaKey || e.shiftKey || a.origin !== location.origin) return;
  if (a.pathname.startsWith('/v1/') || a.pathname === '/metrics' || a.pathname === '/login') return;
  e.preventDefault();
  history.pushState(null, '', a.pathname + a.search + a.hash);
  route(true);
});
window.addEventListener('popstate', () => route(true));

function applyTheme(t) {
  document.documentElement.dataset.theme = t;
  const b = document.getElementById('theme');
  b.textContent = t === 'dark' ? 'light theme' : 'dark theme';
  b.setAttribute('aria-pressed', t === 'dark');
  window.dispatchEvent(new Event('themechange'));
}
function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

async function boot() {
  const saved = localStorage.getItem('sluice_theme');
  applyTheme(saved || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));
  document.getElementById('theme').addEventListener('click', () => {
    const t = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
    localStorage.setItem('sluice_theme', t); applyTheme(t);
  });
  const r = await fetch('/v1/whoami');
  if (r.status === 401) { location.href = '/login'; return; }
  if (r.ok) Object.assign(Me, await r.json());
  document.getElementById('who').textContent = Me.auth ? Me.user + ' (' + Me.role + ')' : 'authentication off';
  document.body.dataset.role = Me.role;
  await route();
}
document.addEventListener('DOMContentLoaded', boot);
