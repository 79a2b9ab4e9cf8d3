/*! Helpline agent console (/agent/). Talks to the agent API and live feed
 *  documented in docs/agent-api.md. Plain ES2020, no build step, no
 *  dependencies, no inline code. Text is only ever put in the page as text
 *  nodes. */
(() => {
  'use strict';

  const WS_URL = location.origin.replace(/^http/, 'ws') + '/api/agent/ws';
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const PING_EVERY_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;
  const STATES = {
    bot: 'Bot', needs_human: 'Needs human', human: 'Human', resolved: 'Resolved',
  };
  // Which actions each state allows (docs/agent-api.md).
  const ALLOWED = {
    takeover: ['bot', 'needs_human'], handback: ['human'],
    resolve: ['bot', 'needs_human', 'human'], reopen: ['resolved'],
  };
  const ROLE_LABELS = {
    customer: 'Customer', assistant: 'AI assistant', agent: 'Agent', system: 'Notice', note: 'Note',
  };

  const $ = (id) => document.getElementById(id);
  const els = {};

  const st = {
    agent: null,
    csrf: null,
    filter: '',
    q: '',
    convs: new Map(), // id -> summary, as listed
    rows: new Map(), // id -> <li>
    listGen: 0, // the newest list request; only its answer is shown
    listLoading: false,
    queued: [], // list frames that arrived while the list was loading
    fetching: new Map(), // id -> frames that came while fetching its summary
    open: null, // { id, items: Map(seq -> item), rows: Map(seq -> <li>), readSent }
    ws: null,
    ready: false,
    backoff: BACKOFF_MIN_MS,
    retryTimer: null,
    pingTimer: null,
    pongTimer: null,
    searchTimer: null,
    readTimer: null,
  };

  // ---- DOM helpers ------------------------------------------------------------

  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids) {
      if (kid == null || kid === false) continue;
      el.append(typeof kid === 'string' ? document.createTextNode(kid) : kid);
    }
    return el;
  }

  function showError(el, text) {
    el.textContent = text || '';
    el.hidden = !text;
  }

  // Visitor ids are UUIDv7: the first digits are a timestamp, the last random.
  const customerLabel = (c) => 'Visitor ' + String(c.visitor_id || '').slice(-8);

  function relativeTime(iso) {
    if (!iso) return '';
    const then = new Date(iso);
    const secs = Math.max(0, (Date.now() - then.getTime()) / 1000);
    if (secs < 45) return 'just now';
    if (secs < 3600) return `${Math.round(secs / 60)} min`;
    if (secs < 86400) return `${Math.round(secs / 3600)} h`;
    if (secs < 6 * 86400) return then.toLocaleDateString(undefined, { weekday: 'short' });
    return then.toLocaleDateString(undefined, { day: 'numeric', month: 'short' });
  }

  const clock = (iso) =>
    new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });

  function timeEl(iso, text) {
    return h('time', { datetime: iso, title: iso ? new Date(iso).toLocaleString() : null }, text);
  }

  // ---- HTTP -------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET' && st.csrf) headers['x-csrf-token'] = st.csrf;
    const res = await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    if (res.ok) return data;
    const err = new Error((data && data.error && data.error.message) || `HTTP ${res.status}`);
    err.status = res.status;
    err.code = data && data.error && data.error.code;
    err.retryAfter = Number(res.headers.get('retry-after')) || 0;
    if (res.status === 401 && path !== '/api/agent/login' && st.agent) {
      signedOut(err.code === 'account_disabled'
        ? 'This account is disabled; you were signed out.'
        : 'Your session ended. Please sign in again.');
    }
    throw err;
  }

  const convPath = (id, rest) => `/api/agent/conversations/${encodeURIComponent(id)}${rest || ''}`;

  // ---- signing in and out -------------------------------------------------------

  function setView(view) {
    document.body.dataset.view = view;
    els.signinView.hidden = view !== 'signin';
    els.consoleView.hidden = view !== 'console';
    els.session.hidden = view !== 'console';
  }

  function signedIn(data) {
    st.agent = data.agent;
    st.csrf = data.csrf_token;
    els.meName.textContent = data.agent.name;
    els.meName.title = data.agent.email;
    setView('console');
    loadList();
    connect();
  }

  function signedOut(message) {
    st.agent = null;
    st.csrf = null;
    disconnect();
    closeConversation();
    st.convs.clear();
    st.rows.clear();
    els.list.replaceChildren();
    setView('signin');
    showError(els.signinError, message || '');
    els.password.value = '';
    els.email.focus();
  }

  async function onSignin(ev) {
    ev.preventDefault();
    showError(els.signinError, '');
    const email = els.email.value.trim();
    const password = els.password.value;
    if (!email || !password) {
      showError(els.signinError, 'Enter your email and password.');
      return;
    }
    els.signinSubmit.disabled = true;
    try {
      signedIn(await api('POST', '/api/agent/login', { email, password }));
      els.password.value = '';
    } catch (err) {
      if (err.status === 401) showError(els.signinError, 'Wrong email or password');
      else if (err.status === 429) {
        const minutes = Math.max(1, Math.ceil(err.retryAfter / 60));
        showError(els.signinError, `Too many attempts, try again in ${minutes} minute${minutes === 1 ? '' : 's'}`);
      } else showError(els.signinError, 'Could not sign in: ' + err.message);
      els.password.select();
    } finally {
      els.signinSubmit.disabled = false;
    }
  }

  async function onLogout() {
    try { await api('POST', '/api/agent/logout'); } catch { /* signed out anyway */ }
    signedOut('');
  }

  // ---- the conversation list ----------------------------------------------------

  // Any item bumps updated_at; the server sorts by it too.
  const activity = (c) => c.updated_at || c.created_at || '';
  const ms = (iso) => Date.parse(iso) || 0;
  const byPriority = (a, b) =>
    (b.state === 'needs_human') - (a.state === 'needs_human') || ms(activity(b)) - ms(activity(a));
  const matchesFilter = (c) => !st.filter || c.state === st.filter;

  async function loadList() {
    const gen = ++st.listGen;
    st.listLoading = true;
    const params = new URLSearchParams({ limit: '200' });
    if (st.filter) params.set('state', st.filter);
    if (st.q) params.set('q', st.q);
    let list;
    try {
      list = await api('GET', '/api/agent/conversations?' + params);
    } catch (err) {
      if (gen !== st.listGen) return;
      st.listLoading = false;
      st.queued = [];
      if (err.status !== 401) showError(els.listEmpty, 'Could not load conversations: ' + err.message);
      return;
    }
    if (gen !== st.listGen || !st.agent) return; // a newer request is on its way
    st.convs = new Map(list.map((c) => [c.id, c]));
    if (st.open && st.convs.has(st.open.id)) st.convs.get(st.open.id).unread = 0;
    st.listLoading = false;
    // Frames that came while loading: those at or below a listed last_seq
    // are already counted.
    st.queued.splice(0).forEach(onListFrame);
    renderList();
  }

  function row(c) {
    let li = st.rows.get(c.id);
    if (!li) {
      li = h('li', { class: 'conv', 'data-id': c.id });
      li.append(h('button', { type: 'button', class: 'conv-open' }));
      li.firstChild.addEventListener('click', () => openConversation(c.id));
      st.rows.set(c.id, li);
    }
    const open = st.open && st.open.id === c.id;
    li.dataset.state = c.state;
    li.classList.toggle('selected', !!open);
    li.classList.toggle('thinking', !!c.thinking);
    const button = li.firstChild;
    if (open) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
    const unread = open ? 0 : c.unread;
    const preview = c.last_message
      ? (c.last_role === 'customer' ? '' : (ROLE_LABELS[c.last_role] || c.last_role) + ': ') + c.last_message
      : 'No messages';
    button.replaceChildren(
      h('span', { class: 'conv-top' },
        h('span', { class: 'who' }, customerLabel(c)),
        timeEl(activity(c), relativeTime(activity(c)))),
      h('span', { class: 'conv-bottom' },
        h('span', { class: `badge state-${c.state}` }, STATES[c.state] || c.state),
        h('span', { class: 'preview' }, preview),
        unread > 0 ? h('span', { class: 'unread', 'aria-label': `${unread} unread` }, String(unread)) : null));
    return li;
  }

  function renderList() {
    const sorted = [...st.convs.values()].filter(matchesFilter).sort(byPriority);
    const keep = new Set(sorted.map((c) => c.id));
    for (const [id, li] of st.rows) if (!keep.has(id)) { li.remove(); st.rows.delete(id); }
    const focused = els.list.contains(document.activeElement) ? document.activeElement : null;
    sorted.forEach((c, i) => {
      const li = row(c);
      if (els.list.children[i] !== li) els.list.insertBefore(li, els.list.children[i] || null);
    });
    if (focused && document.activeElement !== focused && focused.isConnected) focused.focus();
    els.listEmpty.textContent = st.q || st.filter ? 'No conversations match.' : 'No conversations yet.';
    els.listEmpty.hidden = sorted.length > 0;
  }

  function refreshTimes() {
    for (const c of st.convs.values()) {
      const li = st.rows.get(c.id);
      const time = li && li.querySelector('time');
      if (time) time.textContent = relativeTime(activity(c));
    }
  }

  // Applies a live item or state frame to the list.
  function onListFrame(f) {
    if (st.listLoading) { st.queued.push(f); return; }
    const pending = st.fetching.get(f.conversation_id);
    if (pending) { pending.push(f); return; }
    const c = st.convs.get(f.conversation_id);
    if (f.type === 'state') {
      if (!c) return;
      c.state = f.state;
    } else if (f.type === 'status') {
      if (!c) return;
      c.thinking = f.assistant === 'thinking';
    } else if (f.type === 'item') {
      if (!c) { fetchInto(f); return; }
      // Items of unwatched conversations may come out of seq order: skip
      // those the listed summary counts, and those already applied.
      const seen = c.seen || (c.seen = new Set());
      if (f.seq <= c.last_seq || seen.has(f.seq)) return;
      seen.add(f.seq);
      if (ms(f.created_at) > ms(c.updated_at)) c.updated_at = f.created_at;
      if (!f.internal && f.seq > (c.preview_seq || 0)) {
        c.preview_seq = f.seq;
        c.last_message = f.text;
        c.last_role = f.role;
        c.last_message_at = f.created_at;
      }
      const open = st.open && st.open.id === c.id;
      if (f.role === 'customer' && !open) c.unread += 1;
    }
    renderList();
  }

  // An item of a conversation the list does not show: a new one, or one
  // that now matches the search.
  async function fetchInto(f) {
    const id = f.conversation_id;
    if (st.q && !(f.text || '').toLowerCase().includes(st.q.toLowerCase())) return;
    st.fetching.set(id, []);
    let summary = null;
    try {
      summary = (await api('GET', convPath(id, `?after_seq=${f.seq}`))).conversation;
    } catch { /* the next resync lists it */ }
    const pending = st.fetching.get(id) || [];
    st.fetching.delete(id);
    if (summary && st.agent && !st.convs.has(id)) {
      if (st.open && st.open.id === id) summary.unread = 0;
      st.convs.set(id, summary);
    }
    // Later frames: those the summary already counts are skipped by seq.
    pending.forEach(onListFrame);
    renderList();
  }

  function setFilter(state) {
    st.filter = state;
    for (const b of els.filters) b.setAttribute('aria-pressed', String(b.dataset.state === state));
    loadList();
  }

  function onSearch() {
    clearTimeout(st.searchTimer);
    st.searchTimer = setTimeout(() => {
      const q = els.search.value.trim();
      if (q !== st.q) { st.q = q; loadList(); }
    }, 250);
  }

  // ---- the open conversation ----------------------------------------------------

  function closeConversation() {
    if (st.open) send({ type: 'unwatch', conversation_id: st.open.id });
    st.open = null;
    clearTimeout(st.readTimer);
    els.transcript.replaceChildren();
    els.open.hidden = true;
    els.placeholder.hidden = false;
  }

  async function openConversation(id) {
    if (st.open && st.open.id === id) return;
    closeConversation();
    st.open = { id, items: new Map(), rows: new Map(), readSent: 0 };
    els.placeholder.hidden = true;
    els.open.hidden = false;
    showError(els.actionError, '');
    const c = st.convs.get(id);
    if (c) { c.unread = 0; renderDetail(c); }
    renderList();
    try {
      const data = await api('GET', convPath(id));
      if (!st.open || st.open.id !== id) return;
      mergeSummary(data.conversation);
      data.items.forEach(showItem);
      watch();
      els.transcript.lastElementChild && els.transcript.lastElementChild.scrollIntoView({ block: 'end' });
      els.text.focus();
    } catch (err) {
      if (st.open && st.open.id === id) showError(els.actionError, 'Could not load the conversation: ' + err.message);
    }
  }

  function mergeSummary(summary) {
    const known = st.convs.get(summary.id);
    const unread = st.open && st.open.id === summary.id ? 0 : summary.unread;
    if (known && (known.preview_seq || 0) > summary.last_seq) {
      // The feed already showed a newer message than this summary knows.
      const { last_message, last_role, last_message_at, updated_at, preview_seq } = known;
      Object.assign(known, summary, { unread, last_message, last_role, last_message_at, updated_at, preview_seq });
    } else if (known) Object.assign(known, summary, { unread });
    else if (matchesFilter(summary)) st.convs.set(summary.id, summary);
    if (st.open && st.open.id === summary.id) renderDetail(st.convs.get(summary.id) || summary);
    renderList();
  }

  // The highest seq up to which every item is shown: where a watch resumes.
  function contiguous() {
    let n = 0;
    while (st.open.items.has(n + 1)) n += 1;
    return n;
  }

  function watch() {
    if (st.open && st.ready) send({ type: 'watch', conversation_id: st.open.id, after_seq: contiguous() });
  }

  function renderDetail(c) {
    els.title.textContent = customerLabel(c);
    els.title.title = c.visitor_id;
    els.state.textContent = STATES[c.state] || c.state;
    els.state.className = `badge state-${c.state}`;
    for (const [action, states] of Object.entries(ALLOWED)) els[action].disabled = !states.includes(c.state);
    els.thinking.hidden = !c.thinking || !['bot', 'needs_human'].includes(c.state);
    st.open.summary = c;
    st.open.state = c.state;
    updateComposer();
  }

  function itemRow(item) {
    const cls = ['item', `role-${item.role}`];
    if (item.internal) cls.push('internal');
    if (item.role === 'event') {
      // The text says who and why ("Dana took over from the AI: …").
      return h('li', { class: cls.join(' '), 'data-seq': item.seq },
        h('span', { class: 'text' }, item.text),
        h('span', { class: 'meta' }, timeEl(item.created_at, clock(item.created_at)), ' · internal'));
    }
    const who = item.role === 'agent' || item.role === 'note'
      ? item.author || ROLE_LABELS[item.role]
      : ROLE_LABELS[item.role] || item.role;
    const tag = item.role === 'note' ? 'Internal note · not sent to customer'
      : item.internal ? 'Internal · not sent to customer'
        : item.role === 'system' ? 'Shown to customer' : null;
    return h('li', { class: cls.join(' '), 'data-seq': item.seq },
      h('div', { class: 'bubble' },
        h('div', { class: 'meta' },
          h('span', { class: 'author' }, who),
          tag ? h('span', { class: 'tag' }, tag) : null,
          timeEl(item.created_at, clock(item.created_at))),
        h('p', { class: 'text' }, item.text)));
  }

  // Shows an item of the open conversation once, in seq order.
  function showItem(item) {
    const o = st.open;
    if (!o || item.conversation_id !== o.id || o.items.has(item.seq)) return;
    o.items.set(item.seq, item);
    const li = itemRow(item);
    o.rows.set(item.seq, li);
    const list = els.transcript;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    let next = null;
    for (const [seq, other] of o.rows) if (seq > item.seq && (!next || seq < Number(next.dataset.seq))) next = other;
    list.insertBefore(li, next);
    if (atBottom || item.role === 'agent' || item.role === 'note') li.scrollIntoView({ block: 'end' });
    if (item.role === 'assistant' && !item.internal) els.thinking.hidden = true;
    scheduleRead();
  }

  // Tells the server what this agent has seen, at most every half second.
  function scheduleRead() {
    clearTimeout(st.readTimer);
    st.readTimer = setTimeout(async () => {
      const o = st.open;
      if (!o || document.hidden) return;
      const seq = contiguous();
      if (seq <= o.readSent) return;
      o.readSent = seq;
      try { await api('POST', convPath(o.id, '/read'), { seq }); } catch { o.readSent = 0; }
    }, 500);
  }

  // ---- actions --------------------------------------------------------------------

  function mode() {
    return els.composer.querySelector('input[name=mode]:checked').value;
  }

  function updateComposer() {
    const note = mode() === 'note';
    const state = st.open && st.open.state;
    els.composer.dataset.mode = note ? 'note' : 'reply';
    els.send.textContent = note ? 'Add note' : 'Send reply';
    els.text.placeholder = note
      ? 'Write an internal note… (only agents see it)'
      : 'Write a reply… (Enter sends, Shift+Enter for a new line)';
    const resolved = state === 'resolved';
    els.send.disabled = !note && resolved;
    els.hint.textContent = note ? 'Only agents see notes.'
      : resolved ? 'This conversation is resolved: reopen it to reply.'
        : state === 'human' ? 'You are speaking to the customer.'
          : 'Replying takes over from the AI.';
  }

  function friendly(err) {
    if (err.code === 'conversation_resolved') return 'This conversation is resolved: reopen it to reply.';
    if (err.code === 'invalid_transition') return 'Not possible now: ' + err.message + '.';
    if (err.code === 'message_too_long') return 'That message is too long (at most 4000 characters).';
    if (err.code === 'empty_message') return 'Write something first.';
    return err.message;
  }

  async function act(action) {
    const o = st.open;
    if (!o) return;
    showError(els.actionError, '');
    els[action].disabled = true;
    try {
      mergeSummary(await api('POST', convPath(o.id, '/' + action), {}));
    } catch (err) {
      showError(els.actionError, friendly(err));
      const c = st.convs.get(o.id);
      if (c && st.open === o) renderDetail(c);
    }
  }

  async function onCompose(ev) {
    ev.preventDefault();
    const o = st.open;
    const text = els.text.value.trim();
    if (!o || !text || els.send.disabled) return;
    showError(els.actionError, '');
    els.send.disabled = true;
    try {
      const item = await api('POST', convPath(o.id, mode() === 'note' ? '/notes' : '/messages'), { text });
      if (st.open === o) {
        els.text.value = '';
        showItem(item);
      }
    } catch (err) {
      showError(els.actionError, friendly(err));
    } finally {
      updateComposer();
      els.text.focus();
    }
  }

  function onComposeKey(ev) {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      els.composer.requestSubmit();
    }
  }

  // ---- the live feed ----------------------------------------------------------------

  function setConn(state) {
    document.body.dataset.conn = state;
    els.conn.textContent = { open: 'Live', connecting: 'Connecting…', closed: 'Offline, reconnecting…' }[state];
  }

  function send(frame) {
    if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(frame));
  }

  async function connect() {
    clearTimeout(st.retryTimer);
    if (!st.agent || st.ws) return;
    setConn('connecting');
    try {
      // The upgrade's 401 is invisible to scripts: ask first.
      await api('GET', '/api/agent/me');
    } catch (err) {
      if (err.status !== 401) schedule();
      return;
    }
    if (!st.agent || st.ws) return;
    const ws = new WebSocket(WS_URL);
    st.ws = ws;
    ws.onmessage = (ev) => { if (st.ws === ws) onFrame(ev.data); };
    ws.onclose = () => { if (st.ws === ws) { lost(); schedule(); } };
  }

  function onFrame(data) {
    let f;
    try { f = JSON.parse(data); } catch { return; }
    alive();
    switch (f.type) {
      case 'welcome':
        st.ready = true;
        st.backoff = BACKOFF_MIN_MS;
        setConn('open');
        startPing();
        loadList(); // whatever happened while away
        watch();
        break;
      case 'item':
        onListFrame(f);
        showItem(f);
        break;
      case 'state':
        onListFrame(f);
        if (st.open && st.open.id === f.conversation_id) {
          const c = st.convs.get(f.conversation_id) || st.open.summary;
          if (c) { c.state = f.state; renderDetail(c); }
        }
        break;
      case 'status':
        onListFrame(f);
        if (st.open && st.open.id === f.conversation_id) {
          els.thinking.hidden = f.assistant !== 'thinking' || !['bot', 'needs_human'].includes(st.open.state);
        }
        break;
      case 'resync':
        loadList();
        break;
      case 'error':
        if (f.code !== 'not_found') console.warn('agent feed:', f.code, f.message);
        break;
      default: // watching, pong, and types added later
    }
  }

  function lost() {
    st.ws = null;
    st.ready = false;
    stopPing();
    setConn('closed');
  }

  // Gives up on the current socket at once (dead, offline, signed out).
  function drop() {
    const ws = st.ws;
    lost();
    if (ws) { ws.onclose = ws.onmessage = null; ws.close(); }
  }

  function disconnect() {
    clearTimeout(st.retryTimer);
    drop();
  }

  // Exponential backoff with jitter: a random delay in [base/2, base].
  // Offline, the 'online' event reconnects; the timer is only a fallback.
  function schedule() {
    if (!st.agent) return;
    clearTimeout(st.retryTimer);
    const delay = navigator.onLine === false ? BACKOFF_MAX_MS : st.backoff / 2 + Math.random() * (st.backoff / 2);
    st.backoff = Math.min(st.backoff * 2, BACKOFF_MAX_MS);
    st.retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (!st.agent || st.ws) return;
    st.backoff = BACKOFF_MIN_MS;
    connect();
  }

  function startPing() {
    stopPing();
    st.pingTimer = setInterval(() => { send({ type: 'ping' }); expectPong(PONG_TIMEOUT_MS); }, PING_EVERY_MS);
  }

  function expectPong(ms) {
    if (!st.pongTimer) {
      st.pongTimer = setTimeout(() => { st.pongTimer = null; drop(); schedule(); }, ms);
    }
  }

  function alive() { clearTimeout(st.pongTimer); st.pongTimer = null; }

  function stopPing() { clearInterval(st.pingTimer); st.pingTimer = null; alive(); }

  // ---- start ------------------------------------------------------------------------

  async function start() {
    Object.assign(els, {
      signinView: $('signin-view'), consoleView: $('console-view'), session: $('session'),
      signin: $('signin'), email: $('email'), password: $('password'), signinError: $('signin-error'),
      signinSubmit: $('signin-submit'), meName: $('me-name'), logout: $('logout'), conn: $('conn'),
      list: $('conversations'), listEmpty: $('list-empty'), search: $('search'),
      filters: [...document.querySelectorAll('.filter')], placeholder: $('placeholder'), open: $('open'),
      title: $('detail-title'), state: $('detail-state'), actionError: $('action-error'),
      transcript: $('transcript'), thinking: $('thinking'), composer: $('composer'),
      text: $('compose-text'), send: $('send'), hint: $('composer-hint'),
      takeover: $('takeover'), handback: $('handback'), resolve: $('resolve'), reopen: $('reopen'),
    });
    els.signin.addEventListener('submit', onSignin);
    els.logout.addEventListener('click', onLogout);
    els.search.addEventListener('input', onSearch);
    for (const b of els.filters) b.addEventListener('click', () => setFilter(b.dataset.state));
    for (const action of Object.keys(ALLOWED)) els[action].addEventListener('click', () => act(action));
    els.composer.addEventListener('submit', onCompose);
    els.composer.addEventListener('change', updateComposer);
    els.text.addEventListener('keydown', onComposeKey);
    document.addEventListener('visibilitychange', () => { if (!document.hidden && st.open) scheduleRead(); });
    window.addEventListener('online', reconnectNow);
    window.addEventListener('offline', () => { if (st.ws) { drop(); schedule(); } });
    setInterval(refreshTimes, 30000);

    try {
      signedIn(await api('GET', '/api/agent/me'));
    } catch (err) {
      signedOut(err.status === 401 || err.status === undefined ? '' : 'The server cannot be reached: ' + err.message);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
