// The ctd web console: XML-RPC to POST / (same origin), the session id held in this module's memory only.
// Every string from the server is put in the page with textContent, never as markup.
import { call, Fault } from './xmlrpc.js';
import { messages, pickLanguage } from './i18n.js';

const $ = (id) => document.getElementById(id);
const FILTER_KEYS = ['host', 'orig_src', 'orig_dst', 'repl_src', 'repl_dst', 'port', 'orig_port_src', 'orig_port_dst',
  'repl_port_src', 'repl_port_dst', 'l4proto', 'l3proto', 'state', 'status', 'mark', 'timeout', 'zone', 'id', 'label',
  'helper', 'bytes', 'packets', 'orig_bytes', 'repl_bytes', 'byte_rate', 'age', 'username', 'uid'];
const COLUMNS = ['id', 'l4proto', 'orig_src', 'orig_port_src', 'orig_dst', 'orig_port_dst', 'state', 'mark', 'timeout',
  'bytes', 'packets', 'age', 'labels', 'username', 'zone', 'repl_src', 'repl_dst', 'status', 'helper'];
const SORTABLE = new Set(['id', 'l4proto', 'orig_src', 'orig_port_src', 'orig_dst', 'orig_port_dst', 'state', 'mark',
  'timeout', 'bytes', 'packets', 'age', 'username', 'zone', 'repl_src', 'repl_dst', 'status']);
const NUMERIC = new Set(['bytes', 'packets', 'timeout', 'age']); // grouped digits; ports, ids and zones are not
const DEFAULT_COLS = ['id', 'l4proto', 'orig_src', 'orig_port_src', 'orig_dst', 'orig_port_dst', 'state', 'mark',
  'timeout', 'bytes', 'age', 'labels', 'username'];
const GROUPS = ['orig_src', 'orig_dst', 'orig_dst_port', 'username', 'state'];
// The column choice is remembered in this browser (localStorage: a list of column names, nothing secret).
const COLS_KEY = 'ctd.columns';
function savedCols() {
  try {
    const v = JSON.parse(localStorage.getItem(COLS_KEY));
    if (Array.isArray(v)) return new Set(v.filter((c) => COLUMNS.includes(c)));
  } catch { /* none saved, or unreadable: the default */ }
  return new Set(DEFAULT_COLS);
}
function saveCols() { try { localStorage.setItem(COLS_KEY, JSON.stringify(COLUMNS.filter((c) => S.cols.has(c)))); } catch { /* storage off */ } }

const S = {
  lang: 'en', session: null, user: '', role: 'viewer', filters: {}, order: 'id', dir: 'ASC', start: 0, length: 50,
  cols: savedCols(), rows: [], total: 0, selected: new Set(), cursor: '', epoch: 0, known: new Set(),
  tab: 'table', loading: false, pending: false,
};

function t(key, vars = {}) {
  const s = messages[S.lang][key] ?? messages.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] !== undefined ? vars[k] : ''));
}
// A message about n things: KEY.one when the language's plural rules call n "one" (1 in English; 0 and 1 in French).
function tn(key, n, vars = {}) {
  const one = new Intl.PluralRules(S.lang).select(n) === 'one' && messages[S.lang][key + '.one'] !== undefined;
  return t(one ? key + '.one' : key, vars);
}
const nf = () => new Intl.NumberFormat(S.lang);
const fmtNum = (n) => (typeof n === 'number' ? nf().format(n) : n);
const fmtDate = (epoch) => new Intl.DateTimeFormat(S.lang, { dateStyle: 'short', timeStyle: 'medium' }).format(new Date(epoch * 1000));
function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'text') e.textContent = v; else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of kids) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
  return e;
}
function say(text, isError = false) { const m = $('msg'); m.textContent = text; m.className = isError ? 'error' : ''; }

async function rpc(method, ...params) {
  try {
    return await call(method, S.session, ...params);
  } catch (e) {
    if (e instanceof Fault && e.code === 2) { toLogin(t('login.expired')); }
    throw e;
  }
}

// ---- language ----
function applyLanguage() {
  document.documentElement.lang = S.lang;
  $('lang').value = S.lang;
  for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
  document.title = t('title');
  const sel = $('f-key'); const cur = sel.value;
  sel.replaceChildren(...FILTER_KEYS.map((k) => el('option', { value: k, text: k })));
  if (cur) sel.value = cur;
  if (S.session) { renderWho(); renderColumns(); renderHead(); renderRows(); renderChips(); if (S.tab === 'summary') loadSummary(); }
}
$('lang').addEventListener('change', () => { S.lang = $('lang').value; applyLanguage(); });

// ---- login ----
async function loadBanner() {
  try {
    const r = await fetch('/config.json', { cache: 'no-store' });
    const c = await r.json();
    if (c.banner) { $('banner').textContent = c.banner; $('banner').hidden = false; }
  } catch { /* no banner */ }
}
function toLogin(sentence) {
  S.session = null; S.epoch++;
  $('app-view').hidden = true; $('login-view').hidden = false; $('logout').hidden = true; $('who').textContent = '';
  $('login-msg').textContent = sentence || '';
  $('password').value = '';
  $('user').focus();
}
$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('login-btn').disabled = true;
  try {
    S.session = await call('login', $('user').value, $('password').value);
    S.user = $('user').value; $('password').value = '';
    await detectRole();
    $('login-view').hidden = true; $('app-view').hidden = false; $('logout').hidden = false;
    $('login-msg').textContent = '';
    S.filters = {}; S.start = 0; S.selected.clear();
    applyLanguage(); showTab('table');
    await load();
    live(S.epoch);
  } catch (e) {
    $('login-msg').textContent = t('login.failed', { msg: e.message });
  } finally { $('login-btn').disabled = false; }
});
$('logout').addEventListener('click', async () => {
  const s = S.session;
  toLogin(t('login.out'));
  try { await call('logout', s); } catch { /* already gone */ }
});
async function detectRole() {
  // Probes that change nothing: a preview of no entry needs operator; audit_list needs admin.
  S.role = 'viewer';
  try { await call('kill_preview', S.session, { id: '0' }); S.role = 'operator'; } catch (e) { if (e.code !== 3) S.role = 'operator'; }
  if (S.role === 'operator') {
    try { await call('audit_list', S.session, {}, 1); S.role = 'admin'; } catch { /* not admin or no audit */ }
  }
  document.body.dataset.role = S.role;
  for (const b of document.querySelectorAll('.op')) b.hidden = S.role === 'viewer';
  $('audit-tab').hidden = S.role !== 'admin';
}
function renderWho() { $('who').textContent = t('who', { user: S.user, role: t('role.' + S.role) }); }

// ---- tabs ----
function showTab(name) {
  S.tab = name;
  for (const b of document.querySelectorAll('[role=tab]')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
  for (const n of ['table', 'summary', 'audit']) $('tab-' + n).hidden = n !== name;
  if (name === 'summary') loadSummary();
  if (name === 'audit') loadAudit();
}
for (const b of document.querySelectorAll('[role=tab]')) b.addEventListener('click', () => showTab(b.dataset.tab));

// ---- filters ----
function filterArg() { return Object.keys(S.filters).length ? S.filters : {}; }
$('filter-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const k = $('f-key').value, raw = $('f-value').value.trim();
  if (!raw) return;
  const parts = raw.split(',').map((x) => x.trim()).filter(Boolean);
  S.filters[k] = parts.length > 1 ? parts : parts[0];
  $('f-value').value = ''; S.start = 0; renderChips(); load();
});
$('f-clear').addEventListener('click', () => { S.filters = {}; S.start = 0; renderChips(); load(); });
function renderChips() {
  $('chips').replaceChildren(...Object.entries(S.filters).map(([k, v]) => {
    const label = `${k} = ${Array.isArray(v) ? v.join(', ') : v}`;
    return el('li', {}, el('span', { text: label }), el('button', {
      type: 'button', 'aria-label': t('filter.remove', { f: label }), text: '×',
      onclick: () => { delete S.filters[k]; S.start = 0; renderChips(); load(); },
    }));
  }));
}

// ---- table ----
function renderColumns() {
  $('col-list').replaceChildren(...COLUMNS.map((c) => {
    const box = el('input', { type: 'checkbox', id: 'col-' + c, 'data-col': c });
    box.checked = S.cols.has(c);
    box.addEventListener('change', () => { box.checked ? S.cols.add(c) : S.cols.delete(c); saveCols(); renderHead(); renderRows(); });
    return el('label', { for: 'col-' + c }, box, document.createTextNode(t('col.' + c)));
  }));
}
function visibleCols() { return COLUMNS.filter((c) => S.cols.has(c)); }
function renderHead() {
  const ths = [];
  const all = el('input', { type: 'checkbox', id: 'sel-all', 'aria-label': t('select.all') });
  all.addEventListener('change', () => { for (const r of S.rows) all.checked ? S.selected.add(r.id) : S.selected.delete(r.id); renderRows(); });
  if (S.role !== 'viewer') ths.push(el('th', { scope: 'col' }, all));
  for (const c of visibleCols()) {
    const th = el('th', { scope: 'col', 'data-col': c });
    if (SORTABLE.has(c)) {
      const sorted = S.order === c;
      th.setAttribute('aria-sort', sorted ? (S.dir === 'ASC' ? 'ascending' : 'descending') : 'none');
      th.appendChild(el('button', { type: 'button', class: 'sort', text: t('col.' + c) + (sorted ? (S.dir === 'ASC' ? ' ▲' : ' ▼') : ''),
        onclick: () => { if (S.order === c) S.dir = S.dir === 'ASC' ? 'DESC' : 'ASC'; else { S.order = c; S.dir = 'ASC'; } S.start = 0; renderHead(); load(); } }));
    } else th.textContent = t('col.' + c);
    ths.push(th);
  }
  if (S.role !== 'viewer') ths.push(el('th', { scope: 'col', text: t('col.actions') }));
  $('head').replaceChildren(...ths);
}
// A row as the table and the exports show it: the mark unsigned (an i4 carries the u32 signed), bytes and packets
// both directions together (view gives orig_ and repl_ counters).
function normalize(r) {
  const n = { ...r };
  if (typeof n.mark === 'number' && n.mark < 0) n.mark += 2 ** 32;
  n.bytes = (r.orig_bytes ?? 0) + (r.repl_bytes ?? 0);
  n.packets = (r.orig_packets ?? 0) + (r.repl_packets ?? 0);
  return n;
}
function cell(row, c) {
  let v = row[c];
  if (c === 'labels') return (v || []).join(', ');
  if (c === 'status') return (row.status_flags || []).join ? (row.status_flags || []).join(' ') : String(v ?? '');
  if (v === undefined || v === null) return '';
  return NUMERIC.has(c) ? fmtNum(v) : String(v);
}
function renderRows(fresh = new Set(), ending = new Set()) {
  const trs = S.rows.map((r) => {
    const tr = el('tr', { 'data-id': r.id });
    if (fresh.has(r.id)) tr.className = 'fresh';
    if (ending.has(r.id)) tr.className = 'ended';
    if (S.role !== 'viewer') {
      const box = el('input', { type: 'checkbox', class: 'sel', 'aria-label': t('select.row', { id: r.id }) });
      box.checked = S.selected.has(r.id);
      box.addEventListener('change', () => { box.checked ? S.selected.add(r.id) : S.selected.delete(r.id); });
      tr.appendChild(el('td', {}, box));
    }
    for (const c of visibleCols()) tr.appendChild(el('td', { 'data-col': c, text: cell(r, c) }));
    if (S.role !== 'viewer') {
      tr.appendChild(el('td', {}, el('button', { type: 'button', class: 'change', text: t('row.change'), onclick: () => openChange(r) })));
    }
    return tr;
  });
  $('rows').replaceChildren(...trs);
  const from = S.total ? S.start + 1 : 0, to = S.start + S.rows.length;
  $('page').textContent = t('page.of', { from: fmtNum(from), to: fmtNum(to), total: fmtNum(S.total) });
  $('count').textContent = tn('count', S.total, { total: fmtNum(S.total) });
  $('prev').disabled = $('first').disabled = S.start === 0;
  $('next').disabled = to >= S.total;
  $('live').textContent = S.start === 0 ? t('live.on') : t('live.paused', { n: fmtNum(Math.floor(S.start / S.length) + 1) });
  $('live').className = S.start === 0 ? 'on' : 'paused';
}
async function load(fresh) {
  if (!S.session) return;
  if (S.loading) { S.pending = true; return; }
  S.loading = true;
  try {
    const v = await rpc('view', filterArg(), S.order, S.dir, S.start, S.length);
    const ids = new Set(v.connections.map((r) => r.id));
    const newIds = fresh ? new Set([...ids].filter((id) => !S.known.has(id))) : new Set();
    S.known = ids;
    S.rows = v.connections.map(normalize); S.total = v.total;
    for (const id of [...S.selected]) if (!ids.has(id)) S.selected.delete(id);
    renderRows(newIds);
    document.body.dataset.loaded = String(Date.now());
  } catch (e) { if (S.session) say(t('error', { msg: e.message }), true); }
  finally { S.loading = false; if (S.pending) { S.pending = false; load(fresh); } }
}
$('first').addEventListener('click', () => { S.start = 0; load(); });
$('prev').addEventListener('click', () => { S.start = Math.max(0, S.start - S.length); load(); });
$('next').addEventListener('click', () => { S.start += S.length; load(); });
$('page-size').addEventListener('change', () => { S.length = parseInt($('page-size').value, 10); S.start = 0; load(); });

// ---- live updates: the changes long poll; the page is reloaded from the server (which filters and sorts) ----
async function live(epoch) {
  let cursor = '';
  while (S.session && epoch === S.epoch) {
    try {
      const c = await rpc('changes', cursor, 25);
      if (epoch !== S.epoch) return;
      const first = cursor === '';
      cursor = c.cursor;
      if (first || S.start !== 0 || S.tab !== 'table') continue;
      if (c.overflow || c.new.length || c.updated.length || c.destroyed.length) {
        const gone = new Set(c.destroyed.map(String).filter((id) => S.known.has(id)));
        if (gone.size) {
          renderRows(new Set(), gone);
          await new Promise((r) => setTimeout(r, 400)); // the fade-out, then the server's page
        }
        await load(true);
      }
    } catch (e) {
      if (!S.session || epoch !== S.epoch) return;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

// ---- kill ----
function confirmDialog(text, detail) {
  return new Promise((resolve) => {
    $('confirm-text').textContent = text;
    $('confirm-detail').replaceChildren(...(detail || []));
    const d = $('confirm');
    d.returnValue = '';
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.showModal();
    $('confirm-no').focus();
  });
}
$('kill-sel').addEventListener('click', async () => {
  const ids = [...S.selected];
  if (!ids.length) return;
  if (!(await confirmDialog(tn('confirm.ids', ids.length, { n: fmtNum(ids.length) })))) return;
  try {
    const r = await rpc('kill', ids);
    S.selected.clear(); say(tn('killed', r.killed, { n: fmtNum(r.killed) })); load();
  } catch (e) { say(t('error', { msg: e.message }), true); }
});
function groupList(title, groups) {
  return el('div', {}, el('h3', { text: title }), el('ul', {}, ...(groups || []).map((g) =>
    el('li', { text: `${g.key}: ${fmtNum(g.count)}` }))));
}
$('kill-filter').addEventListener('click', async () => {
  try {
    const p = await rpc('kill_preview', filterArg());
    if (!p.token) { say(p.total ? (p.note || t('error', { msg: p.total })) : t('confirm.none')); return; }
    const ok = await confirmDialog(tn('confirm.filter', p.total, { n: fmtNum(p.total) }), [
      groupList(t('confirm.sources'), p.groups?.sources), groupList(t('confirm.destinations'), p.groups?.destinations)]);
    if (!ok) return;
    const r = await rpc('kill_matching', p.token, p.total);
    say(tn('killed', r.killed, { n: fmtNum(r.killed) })); load();
  } catch (e) { say(t('error', { msg: e.message }), true); }
});

// ---- change ----
let changing = null;
function openChange(row) {
  changing = row;
  $('c-field').value = 'mark'; $('c-value').value = cell(row, 'mark');
  $('change').showModal(); $('c-value').focus();
}
$('change').addEventListener('close', async () => {
  if ($('change').returnValue !== 'ok' || !changing) return;
  const row = changing; changing = null;
  const field = $('c-field').value, raw = $('c-value').value.trim();
  try {
    await rpc('change', field, row.id, field === 'mark' ? raw : parseInt(raw, 10));
    say(t('changed', { id: row.id })); load();
  } catch (e) { say(t('error', { msg: e.message }), true); }
  $('change').returnValue = '';
});

// ---- export: every row of the current filter, paged through the server ----
async function allRows() {
  const out = []; let start = 0;
  for (;;) {
    const v = await rpc('view', filterArg(), S.order, S.dir, start, 150);
    out.push(...v.connections.map(normalize)); start += v.connections.length;
    if (!v.connections.length || start >= v.total) return out;
  }
}
function download(name, type, text) {
  const a = el('a', { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.appendChild(a); a.click(); a.remove();
}
const csvCell = (v) => { const s = Array.isArray(v) ? v.join(' ') : String(v ?? ''); return /[",\n\r]/.test(s) || /^[=+\-@]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
$('export-csv').addEventListener('click', async () => {
  try {
    const rows = await allRows(); const cols = COLUMNS.filter((c) => c !== 'status').concat(['status_flags']);
    download('ctd-connections.csv', 'text/csv', [cols.join(',')].concat(rows.map((r) => cols.map((c) => csvCell(r[c])).join(','))).join('\r\n') + '\r\n');
  } catch (e) { say(t('error', { msg: e.message }), true); }
});
$('export-json').addEventListener('click', async () => {
  try { download('ctd-connections.json', 'application/json', JSON.stringify(await allRows(), null, 1)); }
  catch (e) { say(t('error', { msg: e.message }), true); }
});

// ---- summary ----
function barChart(title, res) {
  const groups = res.groups.slice();
  if (res.other && res.other.count) groups.push({ key: t('summary.other'), count: res.other.count });
  const max = Math.max(1, ...groups.map((g) => g.count));
  const ns = 'http://www.w3.org/2000/svg', h = 22, w = 360;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${Math.max(h, groups.length * h)}`); svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', title);
  groups.forEach((g, i) => {
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', '170'); r.setAttribute('y', String(i * h + 3)); r.setAttribute('height', String(h - 6));
    r.setAttribute('width', String(Math.max(1, (g.count / max) * 140))); r.setAttribute('class', 'bar');
    const k = document.createElementNS(ns, 'text'); k.setAttribute('x', '0'); k.setAttribute('y', String(i * h + 16)); k.textContent = String(g.key);
    const n = document.createElementNS(ns, 'text'); n.setAttribute('x', '165'); n.setAttribute('y', String(i * h + 16));
    n.setAttribute('text-anchor', 'end'); n.setAttribute('class', 'n'); n.textContent = fmtNum(g.count);
    svg.append(k, n, r);
  });
  return el('figure', { 'data-group': res.group_by }, el('figcaption', { text: title }), svg);
}
async function loadSummary() {
  const figs = [];
  for (const g of GROUPS) {
    try { figs.push(barChart(t('summary.' + g), await rpc('summary', filterArg(), g, 'count', 10))); } catch { /* field not resolved here */ }
  }
  $('charts').replaceChildren(...figs);
  try {
    const s = await rpc('stats');
    const pct = new Intl.NumberFormat(S.lang, { style: 'percent', maximumFractionDigits: 1 }).format(s.fill ?? (s.kernel_entries / s.max_entries));
    $('fill').replaceChildren(el('p', { text: t('summary.fill', { entries: fmtNum(s.kernel_entries), max: fmtNum(s.max_entries), pct }) }),
      el('meter', { min: '0', max: '1', value: String(s.fill ?? 0), 'aria-label': t('summary.fill', { entries: '', max: '', pct }) }));
    const w = [];
    if (s.sysctl && !s.sysctl.acct) w.push(el('p', { class: 'warn', text: t('warn.acct') }));
    if (s.sysctl && !s.sysctl.timestamp) w.push(el('p', { class: 'warn', text: t('warn.timestamp') }));
    $('warnings').replaceChildren(...w);
    $('kernel').tBodies[0].replaceChildren(...Object.entries(s.kernel || {}).map(([k, v]) =>
      el('tr', {}, el('th', { scope: 'row', text: k }), el('td', { text: fmtNum(v) }))));
  } catch (e) {
    if (e instanceof Fault && e.code === 3) { // a scoped user: stats describes everyone's connections
      $('fill').replaceChildren(el('p', { text: t('summary.scoped') }));
      $('warnings').replaceChildren(); $('kernel').tBodies[0].replaceChildren();
    } else say(t('error', { msg: e.message }), true);
  }
}

// ---- audit ----
async function loadAudit() {
  const f = {};
  if ($('a-user').value) f.user = $('a-user').value;
  if ($('a-action').value) f.action = $('a-action').value;
  if ($('a-since').value) f.since = new Date($('a-since').value).toISOString().replace(/\.\d+Z$/, 'Z');
  try {
    const list = await rpc('audit_list', f, 200);
    $('audit').tBodies[0].replaceChildren(...list.map((r) => {
      const { time, user, action, ...rest } = r;
      const when = typeof time === 'number' ? fmtDate(time) : String(time ?? '');
      return el('tr', {}, el('td', { text: when }), el('td', { text: String(user ?? '') }), el('td', { text: String(action ?? '') }),
        el('td', { class: 'detail', text: JSON.stringify(rest) }));
    }));
  } catch (e) { say(t('error', { msg: e.message }), true); }
  await loadVerify();
}
// The chain's verify status (audit_verify): the sentence is ours, the server's summary is shown beside it as text.
async function loadVerify() {
  const line = $('verify'), detail = $('verify-detail');
  line.dataset.state = 'checking'; line.textContent = t('audit.verify.checking'); detail.textContent = '';
  try {
    const v = await rpc('audit_verify');
    line.dataset.state = v.intact ? 'ok' : 'bad';
    line.textContent = v.intact ? t('audit.verify.ok', { n: fmtNum(v.records) })
      : t('audit.verify.bad', { seq: fmtNum(v.first_bad_seq ?? '?') });
    detail.textContent = [v.summary, ...(v.warnings || [])].join('\n');
  } catch (e) {
    line.dataset.state = 'none';
    line.textContent = e instanceof Fault && e.code === 9 ? t('audit.verify.none') : t('error', { msg: e.message });
  }
}
$('audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); loadAudit(); });

// ---- start ----
S.lang = pickLanguage();
applyLanguage();
loadBanner();
toLogin('');
document.body.dataset.ready = '1';
