// tripwire dashboard: one ES2020 module, no dependencies, no build step.
//
// Every string from the server reaches the page through text nodes or attributes set with
// `el()`; nothing is ever assigned to innerHTML. Pages are hash routes (#/triggers, ...); list
// pages refresh every few seconds by swapping only their data regions, so inputs keep focus.

// ---------------------------------------------------------------- configuration

/** The API's origin: "" (this page's origin) or the `?api=` origin in development. */
const API = (() => {
  const raw = new URLSearchParams(location.search).get('api');
  if (!raw) return '';
  try {
    const url = new URL(raw);
    if (url.protocol === 'http:' || url.protocol === 'https:') return url.origin === location.origin ? '' : url.origin;
  } catch { /* ignored: reported below */ }
  queueMicrotask(() => banner(`ignoring ?api=${raw}: not an http(s) origin`));
  return '';
})();
/** The key is kept per API origin, so a key typed for one server is never sent to another. */
const KEY_STORE = 'tripwire.apiKey@' + (API || location.origin);
const REFRESH_MS = 5000;
const TAIL_MAX_ROWS = 500;
const RUN_STATES = ['Scheduled', 'Running', 'Completed', 'Failed', 'Cancelled'];
const FINAL_STATES = new Set(['Completed', 'Failed', 'Cancelled']);

const main = document.getElementById('main');
const bannerBox = document.getElementById('banner');
const sessionBox = document.getElementById('session');

// ---------------------------------------------------------------- DOM helpers

/** `el('a', {href: '#/x', class: 'c', onclick: fn}, 'text', node, [more])`: builds an element.
 *  Children that are strings become text nodes; null/false/undefined are skipped. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  addChildren(node, children);
  return node;
}

/** The same for SVG elements. */
function svg(tag, attrs, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) node.setAttribute(k, String(v));
  addChildren(node, children);
  return node;
}

const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'open', 'type']);

function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (k === 'href' && !/^(#|\.?\/)/.test(String(v))) continue; // only our own links
    else if (PROPS.has(k)) node[k] = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
}

function addChildren(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces a region's content in one step, keeping which keyed <details> are open and which
 *  keyed control has focus (elements carry `data-key`). */
function swap(container, ...children) {
  const open = new Map();
  for (const d of container.querySelectorAll('details[data-key]')) open.set(d.dataset.key, d.open);
  const active = document.activeElement;
  const focusKey = active && container.contains(active) ? active.dataset.key : null;
  const frag = document.createDocumentFragment();
  addChildren(frag, children);
  container.replaceChildren(frag);
  for (const d of container.querySelectorAll('details[data-key]')) {
    if (open.has(d.dataset.key)) d.open = open.get(d.dataset.key);
  }
  if (focusKey) container.querySelector(`[data-key="${CSS.escape(focusKey)}"]`)?.focus();
}

const enc = encodeURIComponent;
const link = (hash, ...children) => el('a', {href: hash}, ...children);
const triggerLink = (id) => link('#/triggers/' + enc(id), el('span', {class: 'mono'}, id));
const runLink = (id, text) => link('#/runs/' + enc(id), el('span', {class: 'mono', title: id}, text || shortId(id)));
/** Both ends of a long id: firing-made run ids share their start, UUIDv7 ids their time. */
const shortId = (id) => (id && id.length > 16 ? id.slice(0, 8) + '…' + id.slice(-4) : String(id ?? ''));

function pill(text, kind) {
  const cls = String(kind ?? text).toLowerCase().replace(/[^a-z0-9_-]/g, '-');
  return el('span', {class: 'pill pill-' + cls}, text);
}

function table(headers, rows, empty = 'Nothing here yet.') {
  return el('div', {class: 'scroll'}, el('table', null,
    el('thead', null, el('tr', null, headers.map((h) => el('th', null, h)))),
    !rows.length ? el('tbody', null, el('tr', null, el('td', {class: 'empty', colspan: headers.length}, empty)))
      : rows[0].tagName === 'TBODY' ? rows : el('tbody', null, rows)));
}

const tr = (...cells) => el('tr', null, cells.map((c) => (c instanceof HTMLTableCellElement ? c : el('td', null, c))));
const td = (attrs, ...children) => el('td', attrs, ...children);

/** Pretty JSON with a little colour, built from text nodes. */
function jsonView(value, attrs) {
  const text = JSON.stringify(value === undefined ? null : value, null, 2);
  const pre = el('pre', {class: 'json', ...attrs});
  if (text.length > 60000) { pre.textContent = text; return pre; }
  const re = /("(?:\\u[0-9a-fA-F]{4}|\\[^u]|[^\\"])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    const cls = m[1] ? (m[2] ? 'k' : 's') : m[3] ? 'b' : 'n';
    pre.append(el('span', {class: cls}, m[1] || m[0]));
    if (m[2]) pre.append(m[2]);
    last = re.lastIndex;
  }
  pre.append(text.slice(last));
  return pre;
}

/** One-line JSON, truncated, with the whole of it as a tooltip. */
function inlineJson(value, max = 160) {
  const text = JSON.stringify(value === undefined ? null : value);
  return el('span', {class: 'inline-json', title: text.length > max ? text.slice(0, 4000) : null},
    text.length > max ? text.slice(0, max) + '…' : text);
}

const labelsText = (labels) => Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
const labelsView = (labels) => {
  const entries = Object.entries(labels || {});
  if (!entries.length) return el('span', {class: 'muted'}, '(no for_each: one bucket)');
  return entries.map(([k, v], i) => [i ? el('br') : null, el('span', {class: 'muted mono'}, k + '='), el('span', {class: 'mono'}, v)]);
};

// ---------------------------------------------------------------- time

let skewMs = 0; // server clock minus ours, from the Date header when it is readable
const serverNow = () => Date.now() + skewMs;
const pad = (n, w = 2) => String(n).padStart(w, '0');

function fmtTime(iso, ms = false) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` + (ms ? '.' + pad(d.getMilliseconds(), 3) : '');
  const now = new Date(serverNow());
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

function ago(iso) {
  const t = Date.parse(iso);
  if (isNaN(t)) return '';
  const s = (serverNow() - t) / 1000, a = Math.abs(s);
  const text = a < 1 ? null : a < 90 ? `${Math.round(a)} s` : a < 5400 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  return text == null ? 'now' : s >= 0 ? text + ' ago' : 'in ' + text;
}

/** A <time> showing the local time, with the ISO instant and how long ago as its tooltip. */
function when(iso, {ms = false, rel = false} = {}) {
  if (!iso) return el('span', {class: 'muted'}, '—');
  return el('time', {datetime: iso, title: `${iso} (${ago(iso)})`, class: 'nowrap'}, fmtTime(iso, ms), rel ? el('span', {class: 'muted small'}, ' · ' + ago(iso)) : null);
}

function seconds(s) {
  if (s == null) return '—';
  if (s < 120) return `${+s.toFixed(3)} s`;
  if (s < 7200) return `${+(s / 60).toFixed(1)} min`;
  return `${+(s / 3600).toFixed(1)} h`;
}

// ---------------------------------------------------------------- banner

function banner(message, kind = 'error') {
  const text = String(message);
  for (const m of bannerBox.children) if (m.dataset.text === text) return; // shown already
  const box = el('div', {class: 'msg ' + kind, 'data-text': text},
    el('span', null, text),
    el('button', {title: 'Dismiss', 'aria-label': 'Dismiss', onclick: () => box.remove()}, '×'));
  bannerBox.append(box);
}
const clearBanner = () => bannerBox.replaceChildren();

// ---------------------------------------------------------------- API client and auth

const getKey = () => { try { return sessionStorage.getItem(KEY_STORE) || ''; } catch { return ''; } };
const setKey = (key) => { try { key ? sessionStorage.setItem(KEY_STORE, key) : sessionStorage.removeItem(KEY_STORE); } catch { /* private mode */ } };

class ApiError extends Error {
  constructor(status, code, message, problems) {
    super(message);
    Object.assign(this, {status, code, problems});
  }
}

function noteDate(res) {
  const date = Date.parse(res.headers.get('date') || '');
  if (isNaN(date)) return;
  const skew = date + 500 - Date.now(); // the header has whole seconds
  skewMs = Math.abs(skew) > 2000 ? skew : 0;
}

/** Calls the API. A 401 shows the key form; any other error shows `error.message` in the
 *  banner (unless `quiet`) and throws an ApiError. */
async function api(path, {method = 'GET', body, quiet = false, raw = false} = {}) {
  const headers = {Accept: raw ? 'text/plain, */*' : 'application/json'};
  const key = getKey();
  if (key) headers.Authorization = 'Bearer ' + key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(API + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', credentials: 'omit'});
  } catch (e) {
    const hint = API ? ` at ${API} (is it up, and started with --cors-origin ${location.origin}?)` : '';
    const err = new ApiError(0, 'network', `cannot reach the tripwire server${hint}: ${e.message}`);
    if (!quiet) banner(err.message);
    throw err;
  }
  noteDate(res);
  const text = await res.text();
  if (res.ok) {
    if (raw) return text;
    try { return text ? JSON.parse(text) : null; } catch { throw new ApiError(res.status, 'bad_json', `${path}: the answer is not JSON`); }
  }
  let error = null;
  try { error = JSON.parse(text).error; } catch { /* not JSON */ }
  const message = (error && error.message) || `${res.status} ${res.statusText}`.trim();
  const err = new ApiError(res.status, (error && error.code) || 'http_' + res.status, message, error && error.problems);
  if (res.status === 401 && !quiet) needKey(message);
  else if (!quiet) banner(`${method} ${path.split('?')[0]} → ${res.status} ${err.code}: ${message}`);
  throw err;
}

let keyFormShown = false;

/** Shows the API key form in place of the page (auth is on and the key is missing or refused). */
function needKey(message) {
  if (keyFormShown) return;
  keyFormShown = true;
  stopPage();
  clearBanner();
  const input = el('input', {type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'tw_<id>_<secret>', required: true, 'aria-label': 'API key'});
  const form = el('form', {class: 'login panel', onsubmit: (e) => {
    e.preventDefault();
    setKey(input.value.trim());
    keyFormShown = false;
    renderSession();
    route();
  }},
  el('h1', null, 'API key needed'),
  el('p', null, 'This tripwire server has auth on. Enter an API key (a ', el('code', null, 'read'), ' key is enough to look; enabling triggers and cancelling runs need ', el('code', null, 'admin'), '). It is kept in this tab only (sessionStorage) and sent as ', el('code', null, 'Authorization: Bearer'), '.'),
  message ? el('p', {class: 'err'}, message) : null,
  input,
  el('div', {class: 'bar'}, el('button', {class: 'primary', type: 'submit'}, 'Use this key'),
    el('span', {class: 'muted small'}, 'Make one with ', el('code', null, 'tripwire keys create --role read --name dashboard'))));
  main.replaceChildren(form);
  input.focus();
  renderSession();
}

function renderSession() {
  const key = getKey();
  const items = [];
  if (API) items.push(el('span', {title: 'calls the API at this origin (?api=)'}, 'API ', el('code', null, API)));
  if (key) {
    const id = /^(tw_[0-9a-zA-Z]+)_/.exec(key)?.[1] || 'key';
    items.push(el('span', {title: 'the API key in use (this tab only)'}, el('code', null, id)));
    items.push(el('button', {onclick: () => { setKey(''); renderSession(); route(); }}, 'Forget key'));
  } else if (keyFormShown) {
    items.push(el('span', null, 'not signed in'));
  }
  sessionBox.replaceChildren(...items);
}

// ---------------------------------------------------------------- routing

let page = null; // the current page's context

/** A page's lifetime: timers and sockets registered here end when the page is left. */
function newContext() {
  const cleanups = [];
  const ctx = {
    alive: true,
    ticks: [],
    onStop: (fn) => cleanups.push(fn),
    stop() { ctx.alive = false; for (const fn of cleanups.splice(0)) try { fn(); } catch { /* ignore */ } },
    /** Runs `fn` now and then every `ms` (not while the tab is hidden, never overlapping);
     *  returns a function that runs it at once. */
    poll(fn, ms = REFRESH_MS) {
      let timer = null, running = false;
      const tick = async () => {
        clearTimeout(timer);
        if (!ctx.alive) return;
        if (!running && !document.hidden && !keyFormShown) {
          running = true;
          try { await fn(); } catch (e) { if (!(e instanceof ApiError)) console.error(e); } finally { running = false; }
        }
        if (ctx.alive) timer = setTimeout(tick, ms);
      };
      ctx.onStop(() => clearTimeout(timer));
      ctx.ticks.push(tick);
      tick();
      return tick;
    },
  };
  return ctx;
}

function stopPage() { if (page) page.stop(); }

/** For a page about one thing: when it does not exist (404), stop polling and say so. */
const gone = (ctx) => (e) => {
  if (e instanceof ApiError && e.status === 404) {
    ctx.stop();
    main.querySelector('.loading')?.remove();
    main.append(el('p', {class: 'muted'}, 'It does not exist (any more).'));
  }
  throw e;
};

const ROUTES = [
  [/^\/triggers\/?$/, 'triggers', triggersPage],
  [/^\/test\/?$/, 'triggers', testPage],
  [/^\/triggers\/(.+)$/, 'triggers', triggerPage],
  [/^\/runs\/?$/, 'runs', runsPage],
  [/^\/runs\/(.+)$/, 'runs', runPage],
  [/^\/events\/?$/, 'events', eventsPage],
  [/^\/deployments\/?$/, 'deployments', deploymentsPage],
];

function hashParts() {
  const hash = location.hash.replace(/^#/, '') || '/triggers';
  const i = hash.indexOf('?');
  return {path: i < 0 ? hash : hash.slice(0, i), query: new URLSearchParams(i < 0 ? '' : hash.slice(i + 1))};
}

/** Rewrites the hash's query without reloading the page (filters, cursors). */
function setQuery(path, values) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v != null && v !== '') q.set(k, v);
  const s = q.toString();
  history.replaceState(null, '', '#' + path + (s ? '?' + s : ''));
}

function route() {
  stopPage();
  clearBanner();
  keyFormShown = false;
  const {path, query} = hashParts();
  page = newContext();
  main.replaceChildren();
  let section = null;
  for (const [re, name, render] of ROUTES) {
    const m = re.exec(path);
    if (!m) continue;
    section = name;
    let arg = m[1];
    if (arg != null) try { arg = decodeURIComponent(arg); } catch { /* keep as is */ }
    render(page, arg, query);
    break;
  }
  if (!section) main.append(el('h1', null, 'Not found'), el('p', null, 'No page at ', el('code', null, path), '. ', link('#/triggers', 'Triggers')));
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === section);
  renderSession();
  window.scrollTo(0, 0);
}

// ---------------------------------------------------------------- trigger helpers

function triggerKind(t) {
  if (!t) return 'event';
  return t.type || (t.triggers ? (t.require != null ? 'compound' : 'sequence') : 'event');
}

/** The trigger tree flattened depth-first, as the engine numbers a bucket's `node`. */
function triggerNodes(t, path = 'trigger', out = []) {
  out.push({trigger: t, path});
  (t && t.triggers || []).forEach((c, i) => triggerNodes(c, `${path}.triggers[${i}]`, out));
  return out;
}

const names = (list, none) => (list && list.length ? list.join(' or ') : none);

function describeEventTrigger(t) {
  const parts = [];
  if (t.after && t.after.length) parts.push(`after ${names(t.after)} →`);
  const th = t.threshold ?? 1, expect = names(t.expect, 'any event');
  if (t.posture === 'Proactive') parts.push(th === 1 ? `no ${expect} (proactive)` : `fewer than ${th} ${expect} (proactive)`);
  else parts.push(`expect ${expect}` + (th !== 1 ? ` ×${th}` : ''));
  if (t.within) parts.push(`within ${seconds(t.within)}`);
  if (t.for_each && t.for_each.length) parts.push(`for each ${t.for_each.join(', ')}`);
  if (t.filter) parts.push('with a filter');
  return parts.join(' ');
}

function describeTrigger(t) {
  const kind = triggerKind(t);
  if (kind === 'event') return describeEventTrigger(t);
  const n = (t.triggers || []).length;
  const within = t.within == null ? 'no time limit' : `within ${seconds(t.within)}`;
  if (kind === 'compound') {
    const req = t.require === 'all' ? `all ${n}` : t.require === 'any' ? `any of ${n}` : `${t.require} of ${n}`;
    return `${req} child triggers, ${within}`;
  }
  return `${n} child triggers in order, ${within}`;
}

function kindPills(t) {
  const kind = triggerKind(t);
  return [pill(kind), kind === 'event' ? [' ', pill(t.posture || 'Reactive')] : null];
}

/** A bucket, phrased for people: what it waits for, until when, and what opened it. */
function explainBucket(b, node) {
  const t = node || {};
  const expect = names(t.expect, 'a matching event');
  const n = Math.max(0, b.count), th = b.threshold;
  const at = (iso) => fmtTime(iso);
  const zeroWindow = b.start === b.end; // `within: 0`: the bucket lives until the sweep
  const parts = [];
  if (b.phase === 'cooling_down') {
    parts.push(`cooling down after a firing until ${at(b.start)}: events before then are ignored`);
  } else if (b.posture === 'Proactive') {
    parts.push(b.phase === 'open'
      ? `expecting ${expect} at least ${th}× by ${at(b.end)} (${n} so far); fires then if fewer arrive`
      : `window ended at ${at(b.end)} with ${n} of ${th} ${expect}; deleted at ${at(b.sweep_at)} unless it fires or an event renews it first`);
  } else if (b.phase === 'open' || zeroWindow) {
    parts.push(`waiting for ${expect} (${n} of ${th}) until ${at(zeroWindow ? b.sweep_at : b.end)}`);
  } else {
    parts.push(`window ended at ${at(b.end)} with ${n} of ${th} ${expect}; deleted at ${at(b.sweep_at)} unless another event comes first`);
  }
  for (const e of b.events || []) {
    if (e.opens) parts.push(`opened by ${e.event} at ${at(e.occurred)}`);
    if (e.counts) parts.push(`last counted ${e.event} at ${at(e.occurred)}`);
  }
  return parts.join('; ');
}

function enabledButton(record, after) {
  const on = record.enabled !== false;
  const btn = el('button', {
    class: 'toggle ' + (on ? 'on' : 'off'), 'data-key': 'toggle:' + record.id,
    title: on ? 'Enabled: click to disable' : 'Disabled: click to enable',
    onclick: async () => {
      btn.disabled = true;
      try { await api(`/api/triggers/${enc(record.id)}`, {method: 'PATCH', body: {enabled: !on}}); } catch { /* in the banner */ }
      btn.disabled = false;
      after();
    },
  }, on ? 'enabled' : 'disabled');
  return btn;
}

// ---------------------------------------------------------------- page: triggers

function triggersPage(ctx) {
  const body = el('div');
  main.append(el('div', {class: 'head'}, el('h1', null, 'Triggers'), el('span', {class: 'spacer'}), link('#/test', 'Test a draft trigger…')),
    el('p', {class: 'muted'}, 'Buckets: live for_each windows now (click a trigger to see why it did or did not fire). Firings: in the last hour.'),
    body);
  let records = null;
  const draw = () => swap(body, table(
    ['Enabled', 'Trigger', 'Kind', 'Deployment', 'Buckets', 'Firings 1 h', 'Origin', 'Updated', 'Problems'],
    records.map((r) => {
      const s = r.stats || {};
      const firings = s.firings_last_hour == null ? '…' : s.firings_last_hour + (s.firings_partial ? '+' : '');
      return tr(
        enabledButton(r, refresh),
        [triggerLink(r.id), r.name ? el('div', {class: 'muted small'}, r.name) : null],
        [kindPills(r.trigger), el('div', {class: 'small mono'}, describeTrigger(r.trigger || {}))],
        r.deployment ? link('#/deployments', el('span', {class: 'mono'}, r.deployment)) : el('span', {class: 'muted'}, 'none'),
        td({class: 'right'}, s.live_buckets ?? '…'),
        td({class: 'right', title: s.last_firing ? 'last ' + fmtTime(s.last_firing) : null}, firings),
        r.origin || '—',
        when(r.updated),
        [r.error ? el('div', {class: 'err'}, '⚠ ', r.error) : null, r.warning ? el('div', {class: 'warn'}, r.warning) : null]);
    }),
    'No triggers. Serve a flow with triggers, or PUT /api/triggers/{id}.'));
  const refresh = ctx.poll(async () => {
    records = await api('/api/triggers?stats=true');
    if (ctx.alive) draw();
  });
}

// ---------------------------------------------------------------- page: one trigger

function triggerPage(ctx, id, query) {
  const base = `/api/triggers/${enc(id)}`;
  const head = el('div'), buckets = el('div'), firings = el('div'), progress = el('div');
  const keyInput = el('input', {type: 'search', class: 'wide', placeholder: 'a for_each value, e.g. 123', value: query.get('key') || '', 'data-key': 'bucket-key'});
  let cursors = [null]; // the `after` of each page seen; the last one is shown
  let record = null;
  const setKeyFilter = (value) => {
    keyInput.value = value;
    cursors = [null];
    setQuery('/triggers/' + enc(id), {key: value});
    refresh();
  };
  const rest = el('div', {hidden: true});
  head.append(el('div', {class: 'head'}, el('h1', {class: 'mono'}, id)), el('p', {class: 'muted loading'}, 'Loading…'));
  main.append(head, rest);
  rest.append(
    progress,
    el('h2', null, 'Live buckets'),
    el('p', {class: 'muted small'}, 'One per for_each value: where its window stands, what it counted, and the evidence it keeps. A trigger without buckets is waiting for its first event (or has fired and reset).'),
    el('form', {class: 'bar', onsubmit: (e) => { e.preventDefault(); setKeyFilter(keyInput.value.trim()); }},
      el('label', null, 'Key', keyInput), el('button', {type: 'submit'}, 'Look up'),
      el('button', {type: 'button', onclick: () => setKeyFilter('')}, 'All buckets'),
      el('span', {class: 'muted small'}, 'one value matches any for_each label')),
    buckets,
    el('h2', null, 'Recent firings'),
    firings,
    el('h2', null, 'Test against past events'),
    el('p', {class: 'muted small'}, 'Runs this definition over the events the server holds (a backtest): what it would have fired, and why the rest would not have. Nothing is installed or run.'),
    backtestPanel(ctx, (hours) => ({trigger: id, from: hoursAgo(hours)}), () => (record ? record.trigger : null)));

  const drawHead = () => {
    const r = record;
    swap(head,
      el('div', {class: 'head'}, el('h1', {class: 'mono'}, r.id), enabledButton(r, refresh), kindPills(r.trigger)),
      r.name || r.description ? el('p', null, r.name ? el('strong', null, r.name) : null, r.description ? [' — ', r.description] : null) : null,
      r.error ? el('p', {class: 'err'}, '⚠ disabled by the server: ', r.error) : null,
      r.warning ? el('p', {class: 'warn'}, '⚠ ', r.warning) : null,
      el('div', {class: 'grid2'},
        el('div', {class: 'panel'}, el('dl', {class: 'kv'},
          el('dt', null, 'Trigger'), el('dd', {class: 'mono'}, describeTrigger(r.trigger || {})),
          triggerKind(r.trigger) !== 'event' ? [el('dt', null, 'Children'), el('dd', null, triggerNodes(r.trigger).slice(1).map((n) =>
            el('div', {class: 'small'}, el('span', {class: 'muted mono'}, n.path.replace(/^trigger\./, '') + ' '), kindPills(n.trigger), ' ',
              el('span', {class: 'mono'}, describeTrigger(n.trigger || {})))))] : null,
          el('dt', null, 'Deployment'), el('dd', null, r.deployment ? link('#/runs?deployment=' + enc(r.deployment), el('span', {class: 'mono'}, r.deployment)) : 'none (fires without creating runs)'),
          el('dt', null, 'Parameters'), el('dd', null, r.parameters ? inlineJson(r.parameters, 300) : el('span', {class: 'muted'}, 'none')),
          el('dt', null, 'Origin'), el('dd', null, r.origin || '—'),
          el('dt', null, 'Created'), el('dd', null, when(r.created, {rel: true})),
          el('dt', null, 'Updated'), el('dd', null, when(r.updated, {rel: true})))),
        el('details', {class: 'panel', open: true, 'data-key': 'definition'}, el('summary', null, 'Definition'),
          jsonView(Object.fromEntries(Object.entries(r).filter(([k]) => !['created', 'updated', 'origin', 'error', 'warning'].includes(k)))))));
  };

  const drawBuckets = (pageData) => {
    const nodes = triggerNodes(record ? record.trigger : null);
    const composite = nodes.length > 1;
    const heads = ['Key', 'Phase', 'Count', 'Window', 'Deleted at', 'Evidence'];
    const rows = pageData.buckets.map((b) => {
      const node = nodes[b.node] || {trigger: null, path: '?'};
      return el('tbody', {class: 'bucket'},
        tr([labelsView(b.labels), composite ? el('div', {class: 'muted small mono'}, node.path.replace(/^trigger\./, '')) : null],
          [pill(b.phase.replace('_', ' '), b.phase), ' ', pill(b.posture)],
          td({class: 'nowrap'}, el('strong', null, Math.max(0, b.count)), ' of ', b.threshold),
          td({class: 'nowrap'}, b.start === b.end
            ? [when(b.start, {ms: true}), el('div', {class: 'muted small'}, 'within 0: lives until the sweep')]
            : [when(b.start, {ms: true}), ' – ', when(b.end, {ms: true})]),
          when(b.sweep_at),
          (b.events || []).length ? b.events.map((e) => el('div', {class: 'small'},
            el('span', {class: 'mono'}, e.event), ' ', e.opens ? pill('opened', 'info') : null, ' ', e.counts ? pill('counted', 'open') : null,
            ' ', when(e.occurred, {ms: true}), ' ', el('span', {class: 'muted mono', title: e.id}, shortId(e.id))))
            : el('span', {class: 'muted small'}, b.last_event ? 'last event ' + shortId(b.last_event) + ' (no longer stored)' : 'none')),
        el('tr', null, el('td', {class: 'why', colspan: heads.length}, '↳ ', explainBucket(b, node.trigger))));
    });
    const pageNo = cursors.length;
    swap(buckets,
      table(heads, rows, keyInput.value ? `No live bucket for ${keyInput.value}: it never opened, it fired and reset, or it was swept.` : 'No live buckets.'),
      el('div', {class: 'bar'},
        el('span', {class: 'muted small'}, `page ${pageNo} · ${pageData.buckets.length} bucket${pageData.buckets.length === 1 ? '' : 's'}`),
        el('button', {disabled: pageNo === 1, 'data-key': 'prev', onclick: () => { cursors.pop(); refresh(); }}, '← Previous'),
        el('button', {disabled: !pageData.next, 'data-key': 'next', onclick: () => { cursors.push(pageData.next); refresh(); }}, 'Next →')));
  };

  /** Compound and sequence triggers: which children fired, and until when each counts. */
  const drawProgress = (composites) => {
    const nodes = triggerNodes(record ? record.trigger : null);
    const nodePath = (n) => (nodes[n] ? nodes[n].path.replace(/^trigger\.?/, '') : '?') || 'the trigger';
    swap(progress, composites.length ? [
      el('h2', null, 'Progress'),
      el('p', {class: 'muted small'}, 'A compound or sequence trigger keeps the latest firing of each child; it fires when enough children have fired within its window (a sequence: in order), then starts over.'),
      composites.map((c) => {
        const need = c.required <= 1 ? 'any child firing fires it (nothing is kept)'
          : `${c.counting} of ${c.required} needed` + (c.kind === 'sequence' ? ', in order' : '');
        return el('div', {class: 'panel'},
          el('div', {class: 'head'}, el('h3', {class: 'mono'}, nodePath(c.node)), pill(c.kind), ' ',
            el('span', null, need), ' ', el('span', {class: 'muted'}, c.within == null ? 'no time limit' : `within ${seconds(c.within)}`)),
          table(['Child', 'Fired', 'Counts until', ''], c.children.map((k) => {
            const child = nodes[k.node] ? nodes[k.node].trigger : {};
            return tr([el('span', {class: 'muted mono small'}, nodePath(k.node) + ' '), el('span', {class: 'mono small'}, describeTrigger(child || {}))],
              k.fired ? when(k.fired, {ms: true, rel: true}) : el('span', {class: 'muted'}, 'not yet'),
              k.counts_until ? when(k.counts_until, {ms: true}) : '—',
              k.fired ? pill(k.expired ? 'expired' : 'counting', k.expired ? 'warning' : 'open') : pill('waiting', 'zero'));
          })));
      })] : []);
  };

  const drawFirings = (list) => swap(firings, table(['Fired', 'At', 'Bucket', 'Triggering events', 'Parameters / error', 'Run'],
    list.map((f) => tr(when(f.triggered, {ms: true, rel: true}), when(f.at, {ms: true}), labelsView(f.bucket),
      (f.triggering_events && f.triggering_events.length ? f.triggering_events : [f.triggering_event]).filter(Boolean)
        .map((e) => el('div', {class: 'mono small', title: e}, shortId(e))),
      f.error ? el('span', {class: 'err'}, '✗ ', f.error) : f.parameters === undefined ? el('span', {class: 'muted'}, 'no parameters') : inlineJson(f.parameters),
      f.deployment && !f.error ? runLink(f.id, 'run ' + shortId(f.id)) : el('span', {class: 'muted'}, f.deployment ? 'no run' : '—'))),
    'No firings yet.'));

  const refresh = ctx.poll(async () => {
    const [r, f] = await Promise.all([api(base), api(`${base}/firings?limit=50`)]).catch(gone(ctx));
    if (!ctx.alive) return;
    rest.hidden = false;
    record = r;
    drawHead();
    drawFirings(f);
    const q = new URLSearchParams({limit: '100'});
    const after = cursors[cursors.length - 1];
    if (after) q.set('after', after);
    if (keyInput.value.trim()) q.set('key', keyInput.value.trim());
    const b = await api(`${base}/buckets?${q}`);
    if (!ctx.alive) return;
    if (!after) drawProgress(b.composites || []);
    drawBuckets(b);
  });
}

// ---------------------------------------------------------------- backtests

const hoursAgo = (hours) => new Date(serverNow() - hours * 3600e3).toISOString();
const BACKTEST_POLL_MS = 300;

/** "Test against the last N hours": starts a backtest of `request(hours)` (a body for
 *  POST /api/backtest, or null with the reason in the banner), follows it, then shows its
 *  summary, its firings, and a bucket lookup for any key. `trigger()` gives the definition's
 *  trigger, to phrase its buckets. */
function backtestPanel(ctx, request, trigger) {
  const hours = el('input', {type: 'number', min: '0.01', step: 'any', value: '24', class: 'narrow', 'data-key': 'backtest-hours'});
  const status = el('span', {class: 'muted small'});
  const results = el('div');
  let current = null;
  const run = async (e) => {
    e.preventDefault();
    const h = Number(hours.value);
    if (!(h > 0)) { banner('Give a number of hours above 0.'); return; }
    const body = request(h);
    if (!body) return;
    swap(results);
    let record;
    try { record = await api('/api/backtest', {method: 'POST', body}); } catch { return; }
    current = record.id;
    while (ctx.alive && current === record.id && record.state === 'running') {
      status.textContent = `reading events… ${record.events_read} of at most ${record.events_stored}`;
      await new Promise((r) => setTimeout(r, BACKTEST_POLL_MS));
      try { record = await api(`/api/backtest/${enc(record.id)}`, {quiet: true}); } catch { return; }
    }
    if (!ctx.alive || current !== record.id) return;
    status.textContent = '';
    const page = await api(`/api/backtest/${enc(record.id)}/firings?limit=200`);
    drawBacktest(results, record, page, trigger);
  };
  const cancel = async () => {
    if (!current) return;
    try { await api(`/api/backtest/${enc(current)}`, {method: 'DELETE'}); } catch { /* in the banner */ }
  };
  ctx.onStop(() => { current = null; });
  return el('div', {class: 'panel'},
    el('form', {class: 'bar', onsubmit: run},
      el('label', null, 'Last', hours, 'hours'), el('button', {type: 'submit', 'data-key': 'backtest-run'}, 'Test'),
      el('button', {type: 'button', onclick: cancel}, 'Cancel'), status),
    results);
}

function drawBacktest(box, record, page, trigger) {
  const s = record.summary;
  const total = Object.values(s.firings).reduce((a, b) => a + b, 0);
  const keyInput = el('input', {type: 'search', placeholder: 'a for_each value, e.g. 123', 'data-key': 'backtest-key'});
  const tried = el('select', null, record.triggers.map((t) => el('option', {value: t}, t)));
  const bucketsBox = el('div');
  const lookup = async (e) => {
    e.preventDefault();
    const q = new URLSearchParams({trigger: tried.value, limit: '50'});
    if (keyInput.value.trim()) q.set('key', keyInput.value.trim());
    const b = await api(`/api/backtest/${enc(record.id)}/buckets?${q}`);
    const nodes = triggerNodes(trigger());
    swap(bucketsBox, b.buckets.length ? el('ul', {class: 'plain'}, b.buckets.map((x) => el('li', null,
      labelsView(x.labels), ' ', pill(x.phase.replace('_', ' '), x.phase), ' ', el('span', {class: 'small'}, explainBucket(x, (nodes[x.node] || {}).trigger)))))
      : el('p', {class: 'muted small'}, 'No bucket left open for that: it fired and reset, never opened, or was swept.'));
  };
  swap(box,
    el('p', null, pill(record.state, record.state === 'completed' ? 'completed' : 'warning'), ' ',
      el('strong', null, `${total} firing${total === 1 ? '' : 's'}`), ` over ${record.events_read} events`,
      s.errors ? el('span', {class: 'err'}, ` · ${s.errors} rendering errors`) : null,
      el('span', {class: 'muted small'}, ` · clock ran to ${fmtTime(s.clock || record.until)}`)),
    el('ul', {class: 'plain small'}, record.triggers.map((t) => el('li', null, el('span', {class: 'mono'}, t), `: ${s.firings[t] || 0} firings, ${(s.buckets_opened || {})[t] || 0} buckets opened, ${s.open_buckets[t] || 0} still open at the end`))),
    table(['At', 'Trigger', 'Bucket', 'Parameters / error'], page.firings.map((f) => tr(when(f.at, {ms: true}), el('span', {class: 'mono'}, f.trigger), labelsView(f.bucket),
      f.error ? el('span', {class: 'err'}, '✗ ', f.error) : f.parameters === undefined ? el('span', {class: 'muted'}, 'no parameters') : inlineJson(f.parameters))),
      'It would not have fired.'),
    page.next ? el('p', {class: 'muted small'}, `The first ${page.firings.length} of ${s.firings_kept} listed firings.`) : null,
    el('h3', null, 'Why the rest would not have fired'),
    el('form', {class: 'bar', onsubmit: lookup}, tried, el('label', null, 'Key', keyInput), el('button', {type: 'submit'}, 'Show buckets')),
    bucketsBox);
}

/** A draft definition, pasted, tried against past events before it is installed. */
function testPage(ctx) {
  const draft = el('textarea', {rows: 14, class: 'wide mono', spellcheck: 'false', 'data-key': 'draft',
    value: JSON.stringify({id: 'draft', trigger: {after: ['order.created'], expect: ['order.complete'], for_each: ['prefect.resource.id'], within: 3600}, parameters: {user_id: '{{ event.resource.id }}'}}, null, 2)});
  let parsed = null;
  const request = (hours) => {
    try { parsed = JSON.parse(draft.value); } catch (e) { banner('The draft is not JSON: ' + e.message); return null; }
    clearBanner();
    return {definitions: [parsed], from: hoursAgo(hours)};
  };
  main.append(el('div', {class: 'head'}, el('h1', null, 'Test a draft trigger')),
    el('p', {class: 'muted'}, 'A definition as PUT /api/triggers takes it. It runs over the events the server holds; nothing is installed.'),
    draft, backtestPanel(ctx, request, () => (parsed ? parsed.trigger : null)));
}

// ---------------------------------------------------------------- page: runs

function runsPage(ctx, _arg, query) {
  const state = {deployment: query.get('deployment') || '', state: query.get('state') || '', limit: query.get('limit') || '100'};
  const depSelect = el('select', {'data-key': 'dep', onchange: () => apply('deployment', depSelect.value)}, el('option', {value: ''}, 'all'));
  const stateSelect = el('select', {'data-key': 'state', onchange: () => apply('state', stateSelect.value)},
    el('option', {value: ''}, 'all'), RUN_STATES.map((s) => el('option', {value: s, selected: s === state.state}, s)));
  const limitSelect = el('select', {'data-key': 'limit', onchange: () => apply('limit', limitSelect.value)},
    ['50', '100', '500', '1000'].map((n) => el('option', {value: n, selected: n === state.limit}, n)));
  const body = el('div');
  main.append(el('div', {class: 'head'}, el('h1', null, 'Runs')),
    el('div', {class: 'bar'}, el('label', null, 'Deployment', depSelect), el('label', null, 'State', stateSelect), el('label', null, 'Show', limitSelect)),
    body);
  function apply(k, v) { state[k] = v; setQuery('/runs', {deployment: state.deployment, state: state.state, limit: state.limit === '100' ? '' : state.limit}); refresh(); }
  let deployments = [];
  const drawDeployments = () => {
    const namesList = [...new Set([...deployments.map((d) => d.name), state.deployment].filter(Boolean))].sort();
    swap(depSelect, el('option', {value: ''}, 'all'), namesList.map((n) => el('option', {value: n, selected: n === state.deployment}, n)));
    depSelect.value = state.deployment;
  };
  drawDeployments();
  const refresh = ctx.poll(async () => {
    const q = new URLSearchParams({limit: state.limit});
    if (state.deployment) q.set('deployment', state.deployment);
    if (state.state) q.set('state', state.state);
    const [runs, deps] = await Promise.all([api('/api/runs?' + q), api('/api/deployments').catch(() => deployments)]);
    if (!ctx.alive) return;
    if (document.activeElement !== depSelect) { deployments = deps; drawDeployments(); }
    swap(body, table(['Run', 'State', 'Deployment', 'Created', 'Attempt', 'Cause', 'Worker', 'Took'],
      runs.map((r) => tr(runLink(r.id), [pill(r.state), r.reason ? el('div', {class: 'muted small'}, r.reason) : null],
        el('span', {class: 'mono'}, r.deployment), when(r.created, {rel: true}), td({class: 'right'}, r.attempt),
        r.cause ? [triggerLink(r.cause.trigger), el('div', {class: 'muted small mono'}, labelsText(r.cause.bucket))] : el('span', {class: 'muted'}, 'by hand'),
        r.worker ? el('span', {class: 'mono small'}, r.worker) : '—',
        r.started && r.finished ? seconds((Date.parse(r.finished) - Date.parse(r.started)) / 1000) : r.started && r.state === 'Running' ? el('span', {class: 'muted'}, ago(r.started).replace(' ago', '') + '…') : '—')),
      'No runs match.'),
    runs.length >= +state.limit ? el('p', {class: 'muted small'}, `Showing the newest ${state.limit}.`) : null);
  });
}

// ---------------------------------------------------------------- page: one run

function runPage(ctx, id) {
  const head = el('div'), cause = el('div'), timeline = el('div'), result = el('div');
  const logBox = el('div', {class: 'logs'}), logNote = el('div', {class: 'bar'});
  const rest = el('div', {hidden: true},
    el('div', {class: 'grid2'}, el('div', null, el('h2', null, 'Cause'), cause), el('div', null, el('h2', null, 'State timeline'), timeline)),
    result, el('h2', null, 'Logs'), logBox, logNote);
  head.append(el('div', {class: 'head'}, el('h1', null, 'Run ', el('span', {class: 'mono'}, id))), el('p', {class: 'muted loading'}, 'Loading…'));
  main.append(head, rest);
  const logs = {from: 0, count: 0, more: false};
  let causeShown = false, lastRun = null, finalSeen = 0;

  const cancel = async () => {
    if (!confirm(`Cancel run ${id}?`)) return;
    try { await api(`/api/runs/${enc(id)}/cancel`, {method: 'POST', body: {}}); } catch { /* in the banner */ }
    refresh();
  };

  const drawHead = (r) => swap(head,
    el('div', {class: 'head'}, el('h1', null, 'Run ', el('span', {class: 'mono'}, r.id)), pill(r.state),
      r.state === 'Scheduled' || r.state === 'Running' ? el('button', {class: 'danger', 'data-key': 'cancel', onclick: cancel}, 'Cancel run') : null),
    el('div', {class: 'grid2'},
      el('div', {class: 'panel'}, el('dl', {class: 'kv'},
        el('dt', null, 'Deployment'), el('dd', null, link('#/runs?deployment=' + enc(r.deployment), el('span', {class: 'mono'}, r.deployment))),
        el('dt', null, 'Attempt'), el('dd', null, r.attempt),
        r.reason ? [el('dt', null, 'Reason'), el('dd', null, el('code', null, r.reason))] : null,
        el('dt', null, 'Priority'), el('dd', null, r.priority ?? 0),
        el('dt', null, 'Created'), el('dd', null, when(r.created, {ms: true, rel: true})),
        r.not_before ? [el('dt', null, 'Not before'), el('dd', null, when(r.not_before, {rel: true}))] : null,
        el('dt', null, 'Started'), el('dd', null, when(r.started, {ms: true, rel: true})),
        el('dt', null, 'Finished'), el('dd', null, when(r.finished, {ms: true, rel: true})),
        r.worker ? [el('dt', null, 'Worker'), el('dd', {class: 'mono'}, r.worker)] : null,
        r.lease_expires ? [el('dt', null, 'Lease expires'), el('dd', null, when(r.lease_expires, {rel: true}))] : null,
        r.concurrency_key != null ? [el('dt', null, 'Concurrency key'), el('dd', {class: 'mono'}, r.concurrency_key)] : null,
        el('dt', null, 'Events'), el('dd', null, link('#/events?resource=' + enc('tripwire.run.' + r.id), 'live tail of this run')))),
      el('div', {class: 'panel'}, el('h3', null, 'Parameters'), jsonView(r.parameters))));

  const drawResult = (r) => swap(result,
    r.error ? [el('h2', null, 'Error'), el('pre', {class: 'json err'}, r.error)] : null,
    r.output !== undefined && r.output !== null || r.state === 'Completed' ? [el('h2', null, 'Output'), jsonView(r.output)] : null);

  async function drawCause(r) {
    causeShown = true;
    if (!r.cause) { swap(cause, el('p', {class: 'panel muted'}, 'Created by hand (POST /api/deployments/{name}/runs).')); return; }
    const c = r.cause;
    const ids = (c.triggering_events && c.triggering_events.length ? c.triggering_events : [c.triggering_event]).filter(Boolean);
    const info = el('dl', {class: 'kv'},
      el('dt', null, 'Trigger'), el('dd', null, triggerLink(c.trigger)),
      el('dt', null, 'Bucket'), el('dd', null, labelsView(c.bucket)),
      el('dt', null, 'Firing'), el('dd', {class: 'mono small'}, c.firing));
    const evBox = el('div', null, el('p', {class: 'muted small'}, ids.length ? 'Loading the triggering events…' : 'No triggering event (a proactive firing).'));
    swap(cause, el('div', {class: 'panel'}, info, el('h3', null, 'Triggering events'), evBox));
    if (!ids.length) return;
    try {
      const answer = await api('/api/events/filter', {method: 'POST', body: {filter: {id: {id: ids.slice(0, 1000)}}, limit: Math.min(ids.length, 1000)}, quiet: true});
      const byId = new Map(answer.events.map((e) => [e.id, e]));
      swap(evBox, ids.map((eid) => {
        const e = byId.get(eid);
        if (!e) return el('div', {class: 'small'}, el('span', {class: 'mono'}, eid), el('span', {class: 'muted'}, ' — no longer stored (past the retention)'));
        return el('details', {'data-key': 'ev:' + eid, open: ids.length <= 2},
          el('summary', null, el('span', {class: 'mono'}, e.event), ' on ', el('span', {class: 'mono'}, e.resource?.['prefect.resource.id']), ' · ', when(e.occurred, {ms: true})),
          jsonView(e));
      }));
    } catch (e) {
      swap(evBox, el('p', {class: 'muted small'}, 'Could not load them: ', e.message), ids.map((eid) => el('div', {class: 'mono small'}, eid)));
    }
  }

  async function drawTimeline(r) {
    const resource = 'tripwire.run.' + r.id;
    const since = new Date(Date.parse(r.created) - 5000).toISOString();
    let events = [], cursor = null;
    // The run's events, newest first. The server scans a bounded number of events per page,
    // so follow `next_page` a few times until the creation event (previous_state null) shows.
    for (let i = 0; i < 5; i++) {
      const q = new URLSearchParams({resource, limit: '100', since});
      if (cursor != null) q.set('page', cursor);
      const answer = await api('/api/events?' + q, {quiet: true});
      events = events.concat(answer.events || []);
      cursor = answer.next_page;
      if (cursor == null || events.some((e) => e.payload && e.payload.previous_state == null && e.event === 'tripwire.run.scheduled')) break;
    }
    if (!ctx.alive) return;
    events.reverse();
    if (!events.length) {
      // Fall back to the run record's own times.
      const steps = [['Scheduled', r.created], ['Running', r.started], [r.state, r.finished]].filter(([, t]) => t);
      swap(timeline, el('p', {class: 'muted small'}, 'No state events found; from the run record:'),
        el('ol', {class: 'timeline'}, steps.map(([s, t]) => el('li', null, pill(s), ' ', when(t, {ms: true})))));
      return;
    }
    swap(timeline, el('ol', {class: 'timeline'}, events.map((e) => {
      const p = e.payload || {};
      const state = p.state || e.resource?.['tripwire.run.state'] || e.event.replace('tripwire.run.', '');
      return el('li', null, when(e.occurred, {ms: true}), ' ', pill(state),
        p.previous_state ? el('span', {class: 'muted small'}, ` from ${p.previous_state}`) : el('span', {class: 'muted small'}, ' created'),
        p.attempt != null ? el('span', {class: 'muted small'}, ` · attempt ${p.attempt}`) : null,
        p.reason ? [' · ', el('code', null, p.reason)] : null,
        p.worker ? el('span', {class: 'muted small'}, ' · ', el('span', {class: 'mono'}, p.worker)) : null,
        p.error ? el('div', {class: 'err small'}, p.error) : null);
    })), cursor != null ? el('p', {class: 'muted small'}, 'Older events not searched (the event store is large).') : null);
  }

  async function pullLogs() {
    for (let i = 0; i < 5; i++) {
      const answer = await api(`/api/runs/${enc(id)}/logs?from=${logs.from}&limit=1000`, {quiet: true});
      if (!ctx.alive) return;
      const lines = answer.lines || [];
      if (lines.length) {
        const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
        const frag = document.createDocumentFragment();
        for (const l of lines) {
          frag.append(el('div', {class: 'lvl-' + String(l.level).toLowerCase()},
            el('span', {title: l.at}, fmtTime(l.at, true)), el('span', null, l.level), el('span', {title: 'attempt'}, '#' + l.attempt), el('span', {class: 'msg'}, l.message)));
        }
        logBox.append(frag);
        logs.count += lines.length;
        while (logBox.childElementCount > 5000) logBox.firstElementChild.remove();
        if (atBottom) logBox.scrollTop = logBox.scrollHeight;
      }
      if (answer.next != null) logs.from = answer.next;
      if (lines.length < 1000) break;
    }
    swap(logNote, el('span', {class: 'muted small'}, logs.count ? `${logs.count} line${logs.count === 1 ? '' : 's'}${logs.count > 5000 ? ' (showing the last 5000)' : ''}` : 'No log lines yet.'));
  }

  const refresh = ctx.poll(async () => {
    const r = await api(`/api/runs/${enc(id)}`).catch(gone(ctx));
    if (!ctx.alive) return;
    rest.hidden = false;
    const changed = !lastRun || lastRun.updated !== r.updated || lastRun.state !== r.state;
    lastRun = r;
    drawHead(r);
    drawResult(r);
    if (!causeShown) drawCause(r);
    if (FINAL_STATES.has(r.state)) finalSeen++;
    // Once final, the timeline, logs and cause stop changing: stop asking after a last look.
    if (changed || finalSeen <= 2) await Promise.allSettled([drawTimeline(r), pullLogs()]);
  }, 3000);
}

// ---------------------------------------------------------------- rates (/metrics, or the live tail)

const rates = {
  mode: 'probe', // 'probe' | 'metrics' | 'absent'
  samples: [], // {t, events, firings} per 2 s poll, rates per second
  last: null, // {t, events, firings} counters of the previous poll
  tail: new Map(), // 2 s slot (server time) -> events seen on the live tail
  tailFiltered: false,
};
const RATE_WINDOW_MS = 5 * 60e3;
const SLOT_MS = 2000;

/** Sums every sample of a Prometheus counter (any labels); null when it is absent. */
function metricSum(text, name) {
  let sum = 0, found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || line[0] === '#') continue;
    let rest = line.slice(name.length);
    if (rest[0] === '{') {
      let i = 1, quoted = false;
      for (; i < rest.length; i++) {
        const ch = rest[i];
        if (quoted && ch === '\\') i++;
        else if (ch === '"') quoted = !quoted;
        else if (ch === '}' && !quoted) break;
      }
      rest = rest.slice(i + 1);
    } else if (rest[0] !== ' ' && rest[0] !== '\t') continue; // a longer metric name
    const value = parseFloat(rest.trim().split(/\s+/)[0]);
    if (Number.isFinite(value)) { sum += value; found = true; }
  }
  return found ? sum : null;
}

async function pollMetrics() {
  let next = SLOT_MS;
  if (!document.hidden) {
    try {
      const text = await api('/metrics', {raw: true, quiet: true});
      const now = {t: Date.now(), events: metricSum(text, 'tripwire_events_accepted_total'), firings: metricSum(text, 'tripwire_firings_total')};
      if (now.events == null && now.firings == null) throw new ApiError(404, 'no_metrics', 'no tripwire counters');
      rates.mode = 'metrics';
      const last = rates.last;
      if (last && now.t > last.t) {
        const dt = (now.t - last.t) / 1000;
        const rate = (a, b) => (a == null || b == null ? null : a >= b ? (a - b) / dt : a / dt); // a reset restarts from 0
        rates.samples.push({t: now.t, events: rate(now.events, last.events), firings: rate(now.firings, last.firings)});
        while (rates.samples.length && rates.samples[0].t < now.t - RATE_WINDOW_MS) rates.samples.shift();
      }
      rates.last = now;
    } catch (e) {
      if (e.status === 404) { rates.mode = 'absent'; rates.last = null; rates.samples = []; next = 60e3; }
      else next = 10e3; // 401, network: try again later, quietly
    }
  }
  setTimeout(pollMetrics, next);
}

function countTail(event) {
  const t = Date.parse(event.received || event.occurred);
  if (isNaN(t)) return;
  const slot = Math.floor(t / SLOT_MS);
  rates.tail.set(slot, (rates.tail.get(slot) || 0) + 1);
  if (rates.tail.size > 400) {
    const oldest = Math.floor((serverNow() - RATE_WINDOW_MS) / SLOT_MS) - 1;
    for (const k of rates.tail.keys()) if (k < oldest) rates.tail.delete(k);
  }
}

/** The series to draw: [{t, events, firings}] over the last five minutes, and its clock. */
function rateSeries() {
  if (rates.mode === 'metrics') return {now: Date.now(), points: rates.samples, firings: rates.samples.some((s) => s.firings != null)};
  const now = serverNow();
  const current = Math.floor(now / SLOT_MS);
  const points = [];
  for (let s = current - RATE_WINDOW_MS / SLOT_MS; s < current; s++) points.push({t: (s + 1) * SLOT_MS, events: (rates.tail.get(s) || 0) / (SLOT_MS / 1000)});
  return {now, points, firings: false};
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}
const fmtRate = (v) => (v == null ? '—' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

/** The chart, drawn at the pixel width it gets (so its text is not stretched). */
function rateChart(width) {
  const {now, points, firings} = rateSeries();
  const W = Math.max(320, Math.floor(width) - 34), H = 150, L = 44, R = 8, T = 10, B = 22, pw = W - L - R, ph = H - T - B;
  const max = niceMax(Math.max(0, ...points.map((p) => Math.max(p.events || 0, firings ? p.firings || 0 : 0))));
  const x = (t) => L + ((t - (now - RATE_WINDOW_MS)) / RATE_WINDOW_MS) * pw;
  const y = (v) => T + ph - (v / max) * ph;
  const line = (key, cls) => svg('polyline', {class: cls, points: points.filter((p) => p[key] != null && p.t >= now - RATE_WINDOW_MS).map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' ')});
  const lastOf = (key) => { for (let i = points.length - 1; i >= 0; i--) if (points[i][key] != null) return points[i][key]; return null; };
  const source = rates.mode === 'metrics' ? 'from /metrics, every 2 s'
    : rates.mode === 'absent' ? `counted on the live tail${rates.tailFiltered ? ' (filtered)' : ''}: the server has no /metrics` : 'waiting for /metrics…';
  return el('div', {class: 'panel'},
    el('div', {class: 'legend'},
      el('strong', null, 'Rates, last 5 minutes'),
      el('span', null, el('span', {class: 'swatch', style: 'background: var(--accent)'}), `events/s ${fmtRate(lastOf('events'))}`),
      firings ? el('span', null, el('span', {class: 'swatch', style: 'background: var(--orange)'}), `firings/s ${fmtRate(lastOf('firings'))}`) : null,
      el('span', {class: 'muted small'}, source)),
    svg('svg', {class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'events and firings per second'},
      [0, 0.5, 1].map((f) => [svg('line', {class: 'grid', x1: L, x2: W - R, y1: y(max * f), y2: y(max * f)}),
        svg('text', {x: L - 6, y: y(max * f) + 4, 'text-anchor': 'end'}, String(+(max * f).toPrecision(3)))]),
      [['−5 min', 0], ['−2.5 min', 0.5], ['now', 1]].map(([label, f]) => svg('text', {x: L + f * pw, y: H - 6, 'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle'}, label)),
      line('events', 'ev'), firings ? line('firings', 'fi') : null));
}

// ---------------------------------------------------------------- page: events (live tail)

function eventsPage(ctx, _arg, query) {
  const input = (name, placeholder) => el('input', {type: 'text', class: 'wide', name, placeholder, value: query.get(name) || '', 'data-key': name, spellcheck: 'false'});
  const nameIn = input('name', 'exact names, comma-separated: order.created'), prefixIn = input('prefix', 'order.'),
    resourceIn = input('resource', 'resource id; end with * for a prefix: tripwire.run.*');
  const status = el('span', {class: 'small'}), pauseBtn = el('button', {type: 'button', onclick: () => togglePause()}, 'Pause');
  const chartBox = el('div'), tbody = el('tbody'), countBox = el('span', {class: 'muted small'});
  const list = (input) => input.value.split(',').map((s) => s.trim()).filter(Boolean);
  main.append(el('div', {class: 'head'}, el('h1', null, 'Events')), chartBox,
    el('form', {class: 'panel', onsubmit: (e) => { e.preventDefault(); applyFilter(); }},
      el('div', {class: 'bar'}, el('label', null, 'Name', nameIn), el('label', null, 'Prefix', prefixIn)),
      el('div', {class: 'bar'}, el('label', null, 'Resource', resourceIn),
        el('button', {class: 'primary', type: 'submit'}, 'Apply'),
        el('button', {type: 'button', onclick: () => { nameIn.value = prefixIn.value = resourceIn.value = ''; applyFilter(); }}, 'Clear'),
        pauseBtn, el('span', {class: 'spacer'}), status)),
    el('div', {class: 'bar'}, el('strong', null, 'Live tail'), countBox, el('span', {class: 'muted small'}, '· newest on top, the last 15 minutes first, then live; click a row for the whole event')),
    el('div', {class: 'scroll'}, el('table', null,
      el('thead', null, el('tr', null, ['Received', 'Event', 'Resource', 'Related', 'Payload'].map((h) => el('th', null, h)))), tbody)));

  let rows = []; // newest first, at most TAIL_MAX_ROWS
  const seen = new Set(), expanded = new Set();
  let pending = [], paused = false, full = true, frame = 0;
  const key = (e) => Date.parse(e.received || e.occurred) || 0;

  function filterFromInputs() {
    const f = {};
    const n = list(nameIn), p = list(prefixIn), r = list(resourceIn);
    if (n.length || p.length) f.event = {...(n.length ? {name: n} : {}), ...(p.length ? {prefix: p} : {})};
    const ids = r.filter((v) => !v.endsWith('*')), prefixes = r.filter((v) => v.endsWith('*')).map((v) => v.slice(0, -1));
    if (ids.length || prefixes.length) f.resource = {...(ids.length ? {id: ids} : {}), ...(prefixes.length ? {id_prefix: prefixes} : {})};
    return f;
  }

  function eventRow(e) {
    const resource = e.resource?.['prefect.resource.id'] ?? '';
    const runId = resource.startsWith('tripwire.run.') ? resource.slice('tripwire.run.'.length) : null;
    const related = (e.related || []).map((x) => `${x['prefect.resource.role'] || '?'}: ${x['prefect.resource.id']}`);
    const row = el('tr', {class: 'clickable', onclick: (ev) => { if (ev.target.closest('a')) return; expanded.has(e.id) ? expanded.delete(e.id) : expanded.add(e.id); full = true; schedule(); }},
      td({class: 'nowrap'}, when(e.received || e.occurred, {ms: true})),
      td({class: 'mono'}, e.event),
      td({class: 'mono small'}, runId ? link('#/runs/' + enc(runId), resource) : resource),
      td({class: 'small mono'}, related.length ? related.slice(0, 3).join(', ') + (related.length > 3 ? ` +${related.length - 3}` : '') : el('span', {class: 'muted'}, '—')),
      td({class: 'payload'}, e.payload && Object.keys(e.payload).length ? inlineJson(e.payload, 100) : el('span', {class: 'muted'}, '—')));
    if (!expanded.has(e.id)) return [row];
    return [row, el('tr', {class: 'detail'}, el('td', {colspan: 5}, jsonView(e)))];
  }

  function flush() {
    frame = 0;
    if (paused) return;
    if (full) {
      full = false;
      pending = [];
      tbody.replaceChildren(...(rows.length ? rows.flatMap(eventRow) : [el('tr', null, el('td', {class: 'empty', colspan: 5}, 'No events yet for this filter.'))]));
    } else if (pending.length) {
      if (tbody.querySelector('td.empty')) tbody.replaceChildren();
      const frag = document.createDocumentFragment();
      for (const e of pending.sort((a, b) => key(b) - key(a))) frag.append(...eventRow(e));
      pending = [];
      tbody.prepend(frag);
      while (tbody.childElementCount > TAIL_MAX_ROWS + expanded.size) tbody.lastElementChild.remove();
    }
    countBox.textContent = `${rows.length} shown${rows.length >= TAIL_MAX_ROWS ? ' (the latest ' + TAIL_MAX_ROWS + ')' : ''}`;
  }
  // Batched on a timer (not requestAnimationFrame, which stops in background tabs).
  const schedule = () => { if (!frame) frame = setTimeout(flush, 100); };

  function onEvent(e) {
    if (!e || !e.id || seen.has(e.id)) return;
    seen.add(e.id);
    if (rates.mode !== 'metrics') countTail(e);
    const k = key(e);
    if (rows.length && k < key(rows[0])) {
      // Older than the top row (backfill, or clocks): put it in place and redraw.
      let i = rows.findIndex((r) => key(r) <= k);
      if (i < 0) i = rows.length;
      rows.splice(i, 0, e);
      full = true;
    } else {
      rows.unshift(e);
      if (pending.length < TAIL_MAX_ROWS) pending.push(e); else { pending = []; full = true; }
    }
    if (rows.length > TAIL_MAX_ROWS) for (const old of rows.splice(TAIL_MAX_ROWS)) { seen.delete(old.id); expanded.delete(old.id); }
    schedule();
  }

  function togglePause() {
    paused = !paused;
    pauseBtn.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) { full = true; schedule(); }
  }

  let socket = null;
  function applyFilter() {
    setQuery('/events', {name: nameIn.value.trim(), prefix: prefixIn.value.trim(), resource: resourceIn.value.trim()});
    rows = []; seen.clear(); expanded.clear(); rates.tail.clear();
    full = true; schedule();
    const filter = filterFromInputs();
    rates.tailFiltered = Object.keys(filter).length > 0;
    if (socket) socket.close();
    socket = liveTail(filter, onEvent, (text, kind) => swap(status, pill(kind === 'live' ? 'live' : kind === 'error' ? 'closed' : 'connecting', kind), ' ', el('span', {class: 'muted'}, text)));
  }
  ctx.onStop(() => { if (socket) socket.close(); clearTimeout(frame); });
  applyFilter();
  ctx.poll(async () => { swap(chartBox, rateChart(chartBox.clientWidth || 800)); }, SLOT_MS);
  const onResize = () => swap(chartBox, rateChart(chartBox.clientWidth || 800));
  window.addEventListener('resize', onResize);
  ctx.onStop(() => window.removeEventListener('resize', onResize));
}

/** The live tail: `/api/events/out` with Prefect's auth exchange, reconnecting with backoff.
 *  Returns {close()}. */
function liveTail(filter, onEvent, onStatus) {
  const origin = API || location.origin;
  const url = origin.replace(/^http/, 'ws') + '/api/events/out';
  let ws = null, timer = null, closed = false, backoff = 1000, authed = false, since = 0;
  const describe = Object.keys(filter).length ? 'filtered' : 'every event';
  function connect() {
    authed = false;
    onStatus('connecting…', 'connecting');
    try { ws = new WebSocket(url, ['prefect']); } catch (e) { retry(`cannot open ${url}: ${e.message}`); return; }
    ws.onopen = () => ws.send(JSON.stringify({type: 'auth', token: getKey() || null}));
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (msg.type === 'auth_success') {
        authed = true;
        since = Date.now();
        ws.send(JSON.stringify({type: 'filter', filter, backfill: true}));
        onStatus(`connected · ${describe}`, 'live');
      } else if (msg.type === 'event') onEvent(msg.event);
    };
    ws.onclose = (e) => {
      if (closed) return;
      const why = `closed ${e.code}${e.reason ? ': ' + e.reason : e.code === 1006 ? ' (no answer: is the server up, and this origin allowed with --cors-origin?)' : ''}`;
      if (!authed && e.code === 1008) { needKey(`The live tail was refused: ${e.reason || 'credentials are required'}`); return; }
      if (authed && Date.now() - since > 10e3) backoff = 1000;
      retry(why);
    };
  }
  function retry(why) {
    const wait = backoff;
    backoff = Math.min(backoff * 2, 30e3);
    onStatus(`${why} — reconnecting in ${Math.round(wait / 1000)} s`, 'error');
    timer = setTimeout(connect, wait);
  }
  connect();
  return {close() { closed = true; clearTimeout(timer); if (ws) try { ws.close(1000, 'filter changed'); } catch { /* closed */ } }};
}

// ---------------------------------------------------------------- page: deployments and workers

function deploymentSettings(d) {
  const rows = [];
  const add = (k, v) => rows.push(el('dt', null, k), el('dd', null, v));
  if (d.description) add('Description', d.description);
  add('Retries', d.retries ? `${d.retries}, after ${seconds(d.retry_delay_seconds ?? 1)} × ${d.retry_backoff_factor ?? 2}ⁿ, at most ${seconds(d.retry_max_delay_seconds ?? 300)}` : 'none');
  add('Timeout', d.timeout_seconds != null ? seconds(d.timeout_seconds) : 'none');
  if (d.schedule_timeout_seconds != null) add('Schedule timeout', seconds(d.schedule_timeout_seconds));
  add('Concurrency', [d.concurrency_limit != null ? `${d.concurrency_limit} at once` : 'unlimited',
    d.concurrency ? el('div', {class: 'mono small'}, `per key ${d.concurrency.key}: ${d.concurrency.max_runs ?? 1} (${d.concurrency.strategy || 'GROUP_ROUND_ROBIN'})`) : null]);
  if (d.priority) add('Priority', d.priority);
  if (d.parameters && Object.keys(d.parameters).length) add('Default parameters', inlineJson(d.parameters, 200));
  add('Updated', when(d.updated, {rel: true}));
  return el('dl', {class: 'kv'}, rows);
}

function deploymentsPage(ctx) {
  const workersBox = el('div'), depBox = el('div');
  main.append(el('div', {class: 'head'}, el('h1', null, 'Deployments and workers')),
    el('h2', null, 'Workers'),
    el('p', {class: 'muted small'}, 'Workers heard from in the last hour. Online: it claimed, heartbeat or reported within its lease and claim wait.'),
    workersBox,
    el('h2', null, 'Deployments'), depBox);
  ctx.poll(async () => {
    const [deployments, triggers, running, scheduled, workers] = await Promise.all([
      api('/api/deployments'), api('/api/triggers'),
      api('/api/runs?state=Running&limit=1000'), api('/api/runs?state=Scheduled&limit=1000'), api('/api/workers')]);
    if (!ctx.alive) return;
    swap(workersBox, table(['Worker', 'State', 'Deployments', 'Running / slots', 'Last heard', 'Last claim', 'First seen'],
      workers.map((w) => tr(el('span', {class: 'mono'}, w.name),
        pill(w.state),
        w.deployments.length ? w.deployments.map((d) => el('div', {class: 'mono'}, d)) : el('span', {class: 'muted'}, 'not claimed yet'),
        [el('strong', null, `${w.running.length} / ${w.slots ?? '?'}`), ' ', w.running.slice(0, 8).map((id) => [runLink(id), ' ']), w.running.length > 8 ? '…' : null],
        when(w.last_seen, {rel: true}),
        w.last_claim ? when(w.last_claim, {rel: true}) : '—',
        when(w.first_seen, {rel: true}))),
      'No worker has been heard from in the last hour. Serve a flow (see the quickstart).'));
    const count = (list, name) => { const n = list.filter((r) => r.deployment === name).length; return n + (list.length >= 1000 && n ? '+' : ''); };
    const byDeployment = new Map();
    for (const t of triggers) if (t.deployment) (byDeployment.get(t.deployment) || byDeployment.set(t.deployment, []).get(t.deployment)).push(t);
    const known = new Set(deployments.map((d) => d.name));
    const orphans = [...byDeployment.keys()].filter((n) => !known.has(n)).sort();
    swap(depBox, deployments.length ? el('div', {class: 'cards'}, deployments.map((d) => {
      const ts = byDeployment.get(d.name) || [];
      const serving = workers.filter((w) => w.deployments.includes(d.name));
      return el('div', {class: 'panel'},
        el('div', {class: 'head'}, el('h3', {class: 'mono'}, d.name), el('span', {class: 'spacer'}),
          ['Scheduled', 'Running'].map((s) => {
            const n = count(s === 'Running' ? running : scheduled, d.name);
            return [link(`#/runs?deployment=${enc(d.name)}&state=${s}`, pill(`${n} ${s.toLowerCase()}`, n === '0' ? 'zero' : s)), ' '];
          })),
        deploymentSettings(d),
        el('h3', null, 'Triggers'),
        ts.length ? ts.map((t) => el('div', null, pill(t.enabled === false ? 'disabled' : 'enabled'), ' ', triggerLink(t.id), ' ',
          el('span', {class: 'muted small mono'}, describeTrigger(t.trigger || {})), t.error ? el('span', {class: 'err small'}, ' ⚠ ' + t.error) : null))
          : el('p', {class: 'muted small'}, 'No triggers: runs only by hand.'),
        el('h3', null, 'Workers'),
        el('p', {class: 'small'}, serving.length
          ? serving.map((w, i) => [i ? ', ' : '', el('span', {class: 'mono'}, w.name), ' ', pill(w.state)])
          : el('span', {class: 'muted'}, 'no worker has served it in the last hour: its runs wait')));
    })) : el('p', {class: 'muted'}, 'No deployments. Serve a flow, or POST /api/deployments.'),
    orphans.length ? el('p', {class: 'warn'}, 'Triggers name deployments that do not exist: ', orphans.join(', ')) : null);
  });
}

// ---------------------------------------------------------------- start

window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => { if (!document.hidden && page && page.alive) page.ticks.forEach((tick) => tick()); });
route();
pollMetrics();
