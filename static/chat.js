// Helpline demo chat client — customer wire protocol version 1 (see docs/protocol.md).
// Plain ES2020, no build step. Message text is only ever set with textContent.
'use strict';

const VISITOR_KEY = 'helpline.visitor';
const OUTBOX_KEY = 'helpline.outbox';
const MAX_CHARS = 4000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 25000;
const ROLE_LABELS = { customer: 'You', assistant: 'Assistant', agent: 'Agent', system: 'System' };

const els = {
  conn: document.getElementById('conn'),
  log: document.getElementById('log'),
  list: document.getElementById('messages'),
  typing: document.getElementById('typing'),
  form: document.getElementById('composer'),
  input: document.getElementById('input'),
};

const state = {
  visitor: null,        // {visitor_id, token}
  ws: null,
  ready: false,         // welcome received on the current socket
  lastSeq: 0,           // highest seq rendered
  attempt: 0,           // reconnect attempts since the last welcome
  reconnectTimer: null,
  pingTimer: null,
  flashTimer: null,
  conn: { text: 'connecting…', kind: 'warn' },
  outbox: loadOutbox(), // [{client_id, text}] not yet confirmed by the server
};
const rendered = new Map();   // seq -> <li>
const pendingEls = new Map(); // client_id -> <li>

// ---- storage ---------------------------------------------------------------

function readJson(key) {
  try { return JSON.parse(localStorage.getItem(key)); } catch { return null; }
}

function writeJson(key, value) {
  try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* storage unavailable: memory only */ }
}

function loadOutbox() {
  const saved = readJson(OUTBOX_KEY);
  if (!Array.isArray(saved)) return [];
  return saved.filter((m) => m && typeof m.client_id === 'string' && typeof m.text === 'string');
}

function saveOutbox() { writeJson(OUTBOX_KEY, state.outbox); }

function newClientId() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  // Fallback for non-secure contexts: random UUIDv4.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---- status line -----------------------------------------------------------

function setConn(text, kind) {
  state.conn = { text, kind };
  if (!state.flashTimer) showConn();
}

function showConn() {
  els.conn.classList.remove('error');
  els.conn.textContent = state.conn.text;
  els.conn.dataset.state = state.conn.kind;
}

function flash(text, ms = 4000) {
  clearTimeout(state.flashTimer);
  els.conn.textContent = text;
  els.conn.classList.add('error');
  state.flashTimer = setTimeout(() => { state.flashTimer = null; showConn(); }, ms);
}

function setTyping(on) { els.typing.hidden = !on; }

// ---- rendering -------------------------------------------------------------

function isNearBottom() {
  return els.log.scrollHeight - els.log.scrollTop - els.log.clientHeight < 80;
}

function scrollToBottom() { els.log.scrollTop = els.log.scrollHeight; }

function buildBubble(role, text, label, createdAt, note) {
  const li = document.createElement('li');
  li.className = `msg msg-${role in ROLE_LABELS ? role : 'other'}`;

  const meta = document.createElement('div');
  meta.className = 'meta';
  const parts = [];
  if (role !== 'system') parts.push(label);
  const date = createdAt ? new Date(createdAt) : null;
  if (date && !Number.isNaN(date.getTime())) {
    const time = document.createElement('time');
    time.dateTime = createdAt;
    time.textContent = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    parts.push(time);
  }
  if (note) parts.push(note);
  parts.forEach((part, i) => { if (i > 0) meta.append(' · '); meta.append(part); });

  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;

  if (parts.length) li.append(meta);
  li.append(body);
  return li;
}

// Stored messages are kept sorted by seq; pending bubbles (no data-seq) stay last.
function insertInOrder(li, seq) {
  let node = els.list.lastElementChild;
  while (node && (node.dataset.seq === undefined || Number(node.dataset.seq) > seq)) {
    node = node.previousElementSibling;
  }
  if (node) node.after(li); else els.list.prepend(li);
}

function showPending(item) {
  const li = buildBubble('customer', item.text, ROLE_LABELS.customer, null, 'sending…');
  li.classList.add('pending');
  els.list.append(li);
  pendingEls.set(item.client_id, li);
}

function settlePending(clientId) {
  const li = pendingEls.get(clientId);
  if (li) { li.remove(); pendingEls.delete(clientId); }
  const before = state.outbox.length;
  state.outbox = state.outbox.filter((m) => m.client_id !== clientId);
  if (state.outbox.length !== before) saveOutbox();
  return Boolean(li);
}

function clearConversation() {
  for (const li of rendered.values()) li.remove();
  rendered.clear();
  state.lastSeq = 0;
}

// ---- server frames ---------------------------------------------------------

function onWelcome() {
  state.ready = true;
  state.attempt = 0;
  setConn('connected', 'ok');
  startPing();
  resendOutbox(); // the server dedupes by client_id, so re-sending is always safe
}

function onMessage(f) {
  if (!Number.isInteger(f.seq)) return;
  const follow = isNearBottom();
  const wasMine = typeof f.client_id === 'string' && settlePending(f.client_id);
  if (rendered.has(f.seq)) return;

  const label = f.role === 'agent' && f.author ? f.author : (ROLE_LABELS[f.role] || String(f.role));
  const li = buildBubble(f.role, String(f.text ?? ''), label, f.created_at);
  li.dataset.seq = String(f.seq);
  insertInOrder(li, f.seq);
  rendered.set(f.seq, li);
  state.lastSeq = Math.max(state.lastSeq, f.seq);
  if (follow || wasMine) scrollToBottom();
}

function onError(f) {
  flash(`Error: ${f.message || f.code || 'unknown error'}`);
  if (f.code === 'invalid_token') {
    // The stored identity is no good: forget it; the next connect registers a new visitor.
    try { localStorage.removeItem(VISITOR_KEY); } catch { /* ignore */ }
    state.visitor = null;
    clearConversation();
  } else if (f.code === 'internal') {
    setTimeout(resendOutbox, 2000); // retry with the same client_ids
  }
}

function handleFrame(ws, data) {
  if (ws !== state.ws) return;
  let f;
  try { f = JSON.parse(data); } catch { return; }
  if (!f || typeof f !== 'object') return;
  switch (f.type) {
    case 'welcome': onWelcome(f); break;
    case 'message': onMessage(f); break;
    case 'status': setTyping(f.assistant === 'thinking'); break;
    case 'error': onError(f); break;
    case 'pong': break;
    default: break; // unknown frame types are ignored (protocol v1 may be extended)
  }
}

// ---- sending ---------------------------------------------------------------

function sendFrame(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
}

function trySend(item) {
  if (state.ready) sendFrame({ type: 'message', client_id: item.client_id, text: item.text });
}

function resendOutbox() { state.outbox.forEach(trySend); }

function submit() {
  const text = els.input.value.trim();
  if (!text) return;
  if ([...text].length > MAX_CHARS) { flash(`Message too long (max ${MAX_CHARS} characters).`); return; }
  const item = { client_id: newClientId(), text };
  state.outbox.push(item);
  saveOutbox();
  showPending(item);
  els.input.value = '';
  scrollToBottom();
  trySend(item); // if offline it stays in the outbox until the next welcome
}

function startPing() {
  stopPing();
  state.pingTimer = setInterval(() => sendFrame({ type: 'ping' }), PING_EVERY_MS);
}

function stopPing() { clearInterval(state.pingTimer); state.pingTimer = null; }

// ---- connection ------------------------------------------------------------

async function getVisitor() {
  const saved = readJson(VISITOR_KEY);
  if (saved && typeof saved.token === 'string' && saved.token) return saved;
  const res = await fetch('/api/visitors', { method: 'POST', headers: { Accept: 'application/json' } });
  if (!res.ok) throw new Error(`POST /api/visitors failed: HTTP ${res.status}`);
  const body = await res.json();
  if (!body || typeof body.token !== 'string') throw new Error('POST /api/visitors: no token in response');
  const visitor = { visitor_id: body.visitor_id, token: body.token };
  writeJson(VISITOR_KEY, visitor);
  return visitor;
}

async function connect() {
  state.reconnectTimer = null;
  try {
    if (!state.visitor) state.visitor = await getVisitor();
  } catch (err) {
    console.warn(err);
    scheduleReconnect();
    return;
  }

  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${location.host}/api/chat/ws`);
  state.ws = ws;
  state.ready = false;

  ws.addEventListener('open', () => {
    const hello = { type: 'hello', token: state.visitor.token };
    if (state.lastSeq > 0) hello.after_seq = state.lastSeq; // absent => full history
    ws.send(JSON.stringify(hello));
  });
  ws.addEventListener('message', (ev) => handleFrame(ws, ev.data));
  ws.addEventListener('close', () => {
    if (ws !== state.ws) return;
    state.ws = null;
    state.ready = false;
    stopPing();
    setTyping(false);
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  if (state.reconnectTimer) return;
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
  const delay = base / 2 + Math.random() * (base / 2); // jitter within [base/2, base]
  state.attempt = Math.min(state.attempt + 1, 10);
  setConn('reconnecting…', 'warn');
  state.reconnectTimer = setTimeout(connect, delay);
}

// ---- wiring ----------------------------------------------------------------

els.form.addEventListener('submit', (ev) => { ev.preventDefault(); submit(); });

els.input.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    submit();
  }
});

// Back online: skip the remaining backoff delay.
window.addEventListener('online', () => {
  if (state.reconnectTimer) { clearTimeout(state.reconnectTimer); connect(); }
});

state.outbox.forEach(showPending); // messages typed before a reload are still pending
setConn('connecting…', 'warn');
connect();
