/*! Helpline chat widget. Embed with one tag:
 *    <script src="https://support.example.com/widget.js" async></script>
 *  Customer wire protocol version 1 (docs/protocol.md). Plain ES2020, no build
 *  step, no dependencies. Text is only ever put in the page as text nodes. */
(() => {
  'use strict';

  if (window.Helpline && window.Helpline.version) return; // loaded twice
  const script = document.currentScript || document.querySelector('script[src$="/widget.js"]');
  if (!script || !window.WebSocket || !window.fetch) return;

  // ---- settings -------------------------------------------------------------

  const ORIGIN = new URL(script.src, location.href).origin; // the Helpline instance
  const WS_URL = ORIGIN.replace(/^http/, 'ws') + '/api/chat/ws';
  const MAX_CHARS = 4000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const PING_EVERY_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;
  const ROLES = ['customer', 'assistant', 'agent', 'system'];

  // window.HelplineSettings wins over the script tag's data- attributes.
  const given = Object.assign({}, window.HelplineSettings);
  const setting = (name, attr) => {
    const v = given[name] != null ? given[name] : script.dataset[attr || name];
    return v == null || v === '' ? null : String(v);
  };
  const S = {
    color: setting('color'),
    title: setting('title'),
    greeting: setting('greeting'),
    position: setting('position') === 'left' ? 'left' : 'right',
    language: setting('language'),
    user_id: setting('user_id', 'userId'),
    user_hash: setting('user_hash', 'userHash'),
  };

  const STRINGS = {
    en: {
      title: 'Support', greeting: 'Hi! How can we help you today?', open: 'Open chat', close: 'Close chat',
      unread: (n) => `${n} unread ${n === 1 ? 'message' : 'messages'}`, label: 'Your message',
      placeholder: 'Type your message…', send: 'Send', you: 'You', assistant: 'Assistant', agent: 'Agent',
      system: 'Notice', typing: 'Assistant is typing…', sending: 'sending…', conversation: 'Conversation',
      connecting: 'Connecting…', connected: 'Connected', offline: 'Offline: messages will be sent when you are back',
      tooLong: `That message is too long (at most ${MAX_CHARS} characters).`,
      refused: 'The chat is not available: this site could not prove who you are.', unavailable: 'Unavailable',
    },
    fr: {
      title: 'Assistance', greeting: 'Bonjour ! Comment pouvons-nous vous aider ?', open: 'Ouvrir le chat',
      close: 'Fermer le chat', unread: (n) => `${n} ${n === 1 ? 'message non lu' : 'messages non lus'}`,
      label: 'Votre message', placeholder: 'Écrivez votre message…', send: 'Envoyer', you: 'Vous',
      assistant: 'Assistant', agent: 'Conseiller', system: 'Information', typing: 'L’assistant écrit…',
      sending: 'envoi…', conversation: 'Conversation', connecting: 'Connexion…', connected: 'Connecté',
      offline: 'Hors ligne : vos messages partiront au retour du réseau',
      tooLong: `Message trop long (${MAX_CHARS} caractères au plus).`,
      refused: 'Le chat n’est pas disponible : ce site n’a pas pu confirmer votre identité.',
      unavailable: 'Indisponible',
    },
    de: {
      title: 'Support', greeting: 'Hallo! Wie können wir helfen?', open: 'Chat öffnen', close: 'Chat schließen',
      unread: (n) => `${n} ${n === 1 ? 'ungelesene Nachricht' : 'ungelesene Nachrichten'}`,
      label: 'Ihre Nachricht', placeholder: 'Nachricht schreiben…', send: 'Senden', you: 'Sie',
      assistant: 'Assistent', agent: 'Mitarbeiter', system: 'Hinweis', typing: 'Der Assistent schreibt…',
      sending: 'wird gesendet…', conversation: 'Unterhaltung', connecting: 'Verbinde…', connected: 'Verbunden',
      offline: 'Offline: Nachrichten werden gesendet, sobald Sie wieder online sind',
      tooLong: `Die Nachricht ist zu lang (höchstens ${MAX_CHARS} Zeichen).`,
      refused: 'Der Chat ist nicht verfügbar: Diese Website konnte Ihre Identität nicht bestätigen.',
      unavailable: 'Nicht verfügbar',
    },
    es: {
      title: 'Soporte', greeting: '¡Hola! ¿En qué podemos ayudarte?', open: 'Abrir el chat', close: 'Cerrar el chat',
      unread: (n) => `${n} ${n === 1 ? 'mensaje sin leer' : 'mensajes sin leer'}`, label: 'Tu mensaje',
      placeholder: 'Escribe tu mensaje…', send: 'Enviar', you: 'Tú', assistant: 'Asistente', agent: 'Agente',
      system: 'Aviso', typing: 'El asistente está escribiendo…', sending: 'enviando…', conversation: 'Conversación',
      connecting: 'Conectando…', connected: 'Conectado', offline: 'Sin conexión: tus mensajes se enviarán al volver',
      tooLong: `El mensaje es demasiado largo (máximo ${MAX_CHARS} caracteres).`,
      refused: 'El chat no está disponible: este sitio no pudo confirmar tu identidad.',
      unavailable: 'No disponible',
    },
  };
  const LANG = [S.language, document.documentElement.lang, navigator.language, 'en']
    .map((l) => String(l || '').slice(0, 2).toLowerCase())
    .find((l) => STRINGS[l]);
  const T = Object.assign({}, STRINGS.en, STRINGS[LANG]);

  // ---- storage: the host page's localStorage, one namespace per instance ------

  const KEY = `helpline:${ORIGIN}:`;
  const VISITOR_KEY = KEY + 'visitor';
  const OPEN_KEY = KEY + 'open';
  const READ_KEY = KEY + 'read';
  const OUTBOX_KEY = KEY + 'outbox:'; // one key per unconfirmed message, shared by tabs

  const ls = (() => {
    try {
      localStorage.setItem(KEY + 'probe', '1');
      localStorage.removeItem(KEY + 'probe');
      return localStorage;
    } catch {
      // Storage blocked: keep everything for this page only.
      const m = new Map();
      return {
        getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)),
        removeItem: (k) => m.delete(k), key: (i) => [...m.keys()][i], get length() { return m.size; },
      };
    }
  })();
  const parse = (raw) => { try { return JSON.parse(raw); } catch { return null; } };
  const load = (k) => parse(ls.getItem(k));
  const save = (k, v) => { try { ls.setItem(k, JSON.stringify(v)); } catch { /* full: memory only */ } };
  const forget = (k) => { try { ls.removeItem(k); } catch { /* ignore */ } };

  const validVisitor = (v) =>
    v && typeof v.token === 'string' && v.token && (v.user_id || null) === S.user_id ? v : null;
  const validItem = (m) => (m && typeof m.client_id === 'string' && typeof m.text === 'string' ? m : null);

  function outbox() {
    const items = [];
    for (let i = 0; i < ls.length; i++) {
      const k = ls.key(i);
      if (k && k.startsWith(OUTBOX_KEY)) { const m = validItem(load(k)); if (m) items.push(m); }
    }
    return items.sort((a, b) => (a.t || 0) - (b.t || 0));
  }

  function newClientId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16)); // non-secure contexts
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // ---- DOM helpers: elements and text nodes only, never HTML strings ----------

  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    el.append(...kids.filter((kid) => kid != null));
    return el;
  }

  function icon(d) {
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    const path = document.createElementNS(NS, 'path');
    path.setAttribute('d', d);
    svg.append(path);
    return svg;
  }
  const CHAT_ICON = 'M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z';
  const CLOSE_ICON = 'M6 6l12 12M18 6L6 18';
  const DOWN_ICON = 'M6 9l6 6 6-6';

  // ---- Markdown subset for assistant replies, built as DOM nodes ---------------
  // Paragraphs, **bold**, *italics*, `code`, ``` blocks, - and 1. lists,
  // [links](https://…) and bare http(s) URLs. Anything else stays literal text.

  const INLINE = /`([^`\n]+)`|\[([^\]\n]+)\]\(([^()\s]+)\)|\*\*(.+?)\*\*|__(.+?)__|\*(?=\S)(.+?)\*(?!\*)|\b_(?=\S)(.+?)_\b|(https?:\/\/[^\s<>"]*[^\s<>".,;:!?')\]])/;

  function safeUrl(raw) {
    try {
      const url = new URL(raw);
      return ['http:', 'https:', 'mailto:'].includes(url.protocol) ? url.href : null;
    } catch { return null; }
  }

  function link(href, kids) {
    return h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, ...kids);
  }

  function inline(text, inLink) {
    const out = [];
    while (text) {
      const m = INLINE.exec(text);
      if (!m) { out.push(text); break; }
      if (m.index) out.push(text.slice(0, m.index));
      const [all, code, label, href, b1, b2, i1, i2, bare] = m;
      if (code) out.push(h('code', null, code));
      else if (label) {
        const url = safeUrl(href);
        out.push(url && !inLink ? link(url, inline(label, true)) : all);
      } else if (b1 || b2) out.push(h('strong', null, ...inline(b1 || b2, inLink)));
      else if (i1 || i2) out.push(h('em', null, ...inline(i1 || i2, inLink)));
      else if (bare) { const url = safeUrl(bare); out.push(url && !inLink ? link(url, [bare]) : bare); }
      text = text.slice(m.index + all.length);
    }
    return out;
  }

  function markdown(src) {
    const root = h('div', { class: 'text md' });
    const lines = src.replace(/\r\n?/g, '\n').split('\n');
    let para = null; // lines of the current paragraph
    let list = null; // current <ul>/<ol>
    const flush = () => {
      if (para) root.append(h('p', null, ...inline(para.join('\n'))));
      para = null;
      list = null;
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (/^\s*```/.test(line)) {
        flush();
        const code = [];
        while (++i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i]);
        root.append(h('pre', null, h('code', null, code.join('\n'))));
        continue;
      }
      const item = /^\s*(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/.exec(line);
      if (item) {
        const tag = item[1] ? 'ul' : 'ol';
        if (para || !list || list.tagName.toLowerCase() !== tag) {
          flush();
          list = h(tag, tag === 'ol' && item[2] !== '1' ? { start: item[2] } : null);
          root.append(list);
        }
        list.append(h('li', null, ...inline(item[3])));
      } else if (!line.trim()) {
        flush();
      } else if (list && /^\s+\S/.test(line)) {
        list.lastChild.append('\n', ...inline(line.trim())); // continuation of an item
      } else {
        const heading = /^#{1,6}\s+(.*)$/.exec(line);
        if (heading) { flush(); root.append(h('p', null, h('strong', null, ...inline(heading[1])))); continue; }
        if (list) flush();
        (para = para || []).push(line);
      }
    }
    flush();
    return root;
  }

  // ---- the widget's DOM ---------------------------------------------------------

  const STYLE = `
:host{all:initial}
.hl{--accent:#2558c9;--on-accent:#fff;--text:#1d2330;--muted:#4d5766;--line:#d5dae2;--bg:#f6f7f9;
 font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--text)}
*,*::before,*::after{box-sizing:border-box}
button{font:inherit;cursor:pointer}
svg{width:24px;height:24px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}
.launcher{position:fixed;bottom:20px;right:20px;z-index:2147483000;width:58px;height:58px;border:0;border-radius:50%;
 background:var(--accent);color:var(--on-accent);display:grid;place-items:center;box-shadow:0 4px 14px rgba(0,0,0,.25)}
.launcher svg{width:28px;height:28px}
.launcher:hover{filter:brightness(1.08)}
.left .launcher{right:auto;left:20px}
.badge{position:absolute;top:-3px;right:-3px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;
 background:#c0162d;color:#fff;font-size:12px;font-weight:700;line-height:22px;text-align:center;box-shadow:0 0 0 2px #fff}
.panel{position:fixed;bottom:90px;right:20px;z-index:2147483000;width:380px;height:min(620px,calc(100vh - 110px));
 display:flex;flex-direction:column;background:#fff;border-radius:16px;overflow:hidden;box-shadow:0 12px 48px rgba(0,0,0,.28)}
.left .panel{right:auto;left:20px}
header{display:flex;align-items:center;gap:12px;padding:14px 12px 14px 18px;background:var(--accent);color:var(--on-accent)}
h2{margin:0;font-size:17px;font-weight:650;line-height:1.3}
.conn{margin:1px 0 0;font-size:13px}
.conn::before{content:"";display:inline-block;width:8px;height:8px;margin-right:6px;border-radius:50%;background:#f5b52e;box-shadow:0 0 0 1.5px #fff}
[data-conn=open] .conn::before{background:#34c76b}
[data-conn=blocked] .conn::before{background:#d8243a}
.close{margin-left:auto;width:40px;height:40px;border:0;border-radius:10px;background:transparent;color:inherit;display:grid;place-items:center}
.close:hover{background:rgba(127,127,127,.22)}
.log{flex:1;overflow-y:auto;padding:16px 14px;background:var(--bg);overscroll-behavior:contain}
ol{list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:10px}
.msg,.greeting{max-width:86%;padding:9px 13px;border-radius:16px;overflow-wrap:anywhere}
.greeting{margin:0 0 10px;background:#fff;border:1px solid var(--line);border-bottom-left-radius:4px;width:fit-content}
.meta{display:block;margin-bottom:2px;font-size:12px;color:var(--muted)}
.author{font-weight:600;color:var(--text)}
.text{white-space:pre-wrap}
.msg-customer{align-self:flex-end;background:var(--accent);color:var(--on-accent);border-bottom-right-radius:4px}
.msg-customer .meta,.msg-customer .author{color:inherit;text-align:right}
.msg-assistant,.msg-other{align-self:flex-start;background:#fff;border:1px solid var(--line);border-bottom-left-radius:4px}
.msg-agent{align-self:flex-start;background:#e6f4ea;border:1px solid #b9dcc4;border-bottom-left-radius:4px}
.msg-system{align-self:center;max-width:94%;padding:5px 12px;border:1px dashed #9aa3b0;border-radius:8px;
 color:var(--muted);font-size:13.5px;font-style:italic;text-align:center}
.msg-system .meta{display:none}
.pending{opacity:.7}
.md{white-space:normal}
.md p{margin:0 0 .55em;white-space:pre-wrap}
.md>:last-child{margin-bottom:0}
.md ul,.md ol{margin:.2em 0 .55em;padding-left:1.35em}
.md li{white-space:pre-wrap}
.md code{font:13.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef0f4;padding:1px 4px;border-radius:4px}
.md pre{margin:0 0 .55em;padding:8px 10px;background:#eef0f4;border-radius:8px;white-space:pre-wrap}
.md pre code{padding:0;background:none}
.md a{color:#1b4fb8;text-decoration:underline}
.typing{margin:0;padding:4px 18px 8px;background:var(--bg);color:var(--muted);font-size:13.5px;font-style:italic}
.notice{margin:0;padding:9px 18px;background:#fdecee;color:#8c1422;font-size:14px}
form{display:flex;align-items:flex-end;gap:8px;padding:10px 12px;border-top:1px solid var(--line);background:#fff}
textarea{flex:1;min-width:0;min-height:42px;max-height:128px;padding:10px 12px;resize:none;border:1px solid #8a94a3;border-radius:12px;
 font:inherit;color:inherit;background:#fff}
textarea::placeholder{color:#69727f}
.send{width:42px;height:42px;flex:none;border:0;border-radius:12px;background:var(--accent);color:var(--on-accent);display:grid;place-items:center}
.send svg{width:22px;height:22px}
:focus-visible{outline:3px solid #1d2330;outline-offset:2px}
header :focus-visible,.launcher:focus-visible,.send:focus-visible{outline-color:#f5b52e}
.vh{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}
[hidden]{display:none!important}
@media (max-width:480px){
 .panel{inset:0;width:auto;height:auto;border-radius:0}
 .open .launcher{display:none}
 textarea{font-size:16px}
}
@media (prefers-reduced-motion:no-preference){.panel{animation:hl-in .16s ease-out}}
@keyframes hl-in{from{opacity:0;transform:translateY(12px)}}`;

  let els = null;

  function build() {
    // A custom element name: host page rules for div and the like do not reach it.
    const host = h('helpline-widget', { id: 'helpline-widget' });
    host.style.setProperty('all', 'initial', 'important');
    const shadow = host.attachShadow({ mode: 'open' });
    if (shadow.adoptedStyleSheets && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
      const sheet = new CSSStyleSheet(); // not blocked by a host page's CSP on <style>
      sheet.replaceSync(STYLE);
      shadow.adoptedStyleSheets = [sheet];
    } else {
      shadow.append(h('style', null, STYLE));
    }
    const e = {};
    e.badge = h('span', { class: 'badge', 'aria-hidden': 'true', hidden: true });
    e.launcher = h('button', { type: 'button', class: 'launcher', 'aria-expanded': 'false', 'aria-controls': 'panel',
      onclick: () => setOpen(!st.open, true) }, icon(CHAT_ICON), e.badge);
    e.conn = h('p', { class: 'conn' }, T.connecting);
    e.list = h('ol');
    e.log = h('div', { class: 'log', tabindex: '0', role: 'region', 'aria-label': T.conversation },
      h('p', { class: 'greeting' }, S.greeting || T.greeting), e.list);
    e.typing = h('p', { class: 'typing', role: 'status', hidden: true }, T.typing);
    e.notice = h('p', { class: 'notice', role: 'alert', hidden: true });
    e.input = h('textarea', { id: 'input', rows: '1', maxlength: String(MAX_CHARS), autocomplete: 'off',
      placeholder: T.placeholder, oninput: autosize, onkeydown: onKey });
    e.form = h('form', { onsubmit: (ev) => { ev.preventDefault(); submit(); } },
      h('label', { class: 'vh', for: 'input' }, T.label), e.input,
      h('button', { type: 'submit', class: 'send', 'aria-label': T.send, title: T.send },
        icon('M4 12l16-8-6 16-3-7-7-1z')));
    e.panel = h('section', { id: 'panel', class: 'panel', role: 'dialog', 'aria-labelledby': 'title', hidden: true,
      onkeydown: (ev) => { if (ev.key === 'Escape' && !ev.isComposing) { ev.preventDefault(); setOpen(false, true); } } },
      h('header', null,
        h('div', null, h('h2', { id: 'title' }, S.title || T.title), e.conn),
        h('button', { type: 'button', class: 'close', 'aria-label': T.close, title: T.close,
          onclick: () => setOpen(false, true) }, icon(CLOSE_ICON))),
      e.log, e.typing, e.notice, e.form);
    e.live = h('div', { class: 'vh', 'aria-live': 'polite' }); // announces new replies, not the history
    e.root = h('div', { class: `hl ${S.position}`, 'data-conn': 'idle', lang: LANG }, e.launcher, e.panel, e.live);
    shadow.append(e.root);
    document.body.append(host);
    applyColor(e.root);
    return e;
  }

  // The accent colour, with whichever of white or near-black reads better on it.
  function applyColor(root) {
    if (!S.color || !CSS.supports('color', S.color)) return;
    root.style.setProperty('--accent', S.color);
    const probe = h('i', { hidden: true });
    probe.style.color = S.color;
    root.append(probe);
    const rgb = (getComputedStyle(probe).color.match(/[\d.]+/g) || [0, 0, 0]).slice(0, 3).map(Number);
    probe.remove();
    const lin = rgb.map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
    const lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
    root.style.setProperty('--on-accent', 1.05 / (lum + 0.05) >= (lum + 0.05) / 0.0556 ? '#fff' : '#111');
  }

  // ---- state ------------------------------------------------------------------

  const st = {
    visitor: null, // {visitor_id, token, user_id}
    ws: null,
    ready: false, // welcome received on the current socket
    starting: false, // fetching a visitor identity
    conversation: null,
    lastSeq: 0, // highest seq rendered
    resuming: false, // the current socket said hello with after_seq
    quietUpTo: 0, // history replayed on a fresh load is not announced
    attempt: 0, // reconnect attempts since the last welcome
    timer: null,
    pingTimer: null,
    pongTimer: null,
    blocked: false, // identity refused: do not retry
    open: false,
  };
  const rendered = new Map(); // seq -> {li, role}
  const confirmed = new Set(); // client_ids stored by the server
  const pendingEls = new Map(); // client_id -> <li>

  function setConn(state) {
    els.root.dataset.conn = state;
    els.conn.textContent = { open: T.connected, offline: T.offline, blocked: T.unavailable }[state] || T.connecting;
  }

  function showNotice(text) {
    els.notice.textContent = text || '';
    els.notice.hidden = !text;
  }

  // ---- rendering --------------------------------------------------------------

  const nearBottom = () => els.log.scrollHeight - els.log.scrollTop - els.log.clientHeight < 80;
  const toBottom = () => { els.log.scrollTop = els.log.scrollHeight; };

  function bubble(role, text, who, createdAt, note) {
    const known = ROLES.includes(role) ? role : 'other';
    const meta = h('span', { class: 'meta' }, h('span', { class: 'author' }, who));
    const date = createdAt ? new Date(createdAt) : null;
    if (date && !isNaN(date)) {
      meta.append(' · ', h('time', { datetime: createdAt },
        date.toLocaleTimeString(LANG, { hour: 'numeric', minute: '2-digit' })));
    }
    if (note) meta.append(' · ', note);
    const body = role === 'assistant' ? markdown(text) : h('div', { class: 'text' }, text);
    return h('li', { class: `msg msg-${known}` }, meta, body);
  }

  function author(f) {
    if (f.role === 'agent') return typeof f.author === 'string' && f.author.trim() ? f.author : T.agent;
    return f.role === 'customer' ? T.you : f.role === 'assistant' ? T.assistant : T.system;
  }

  // Stored messages stay sorted by seq; pending ones (no data-seq) stay last.
  function insertBySeq(li, seq) {
    let node = els.list.lastElementChild;
    while (node && (!node.dataset.seq || Number(node.dataset.seq) > seq)) node = node.previousElementSibling;
    if (node) node.after(li); else els.list.prepend(li);
  }

  function onMessage(f) {
    if (!Number.isInteger(f.seq) || f.seq < 1) return;
    const follow = nearBottom();
    const mine = typeof f.client_id === 'string' && settle(f.client_id);
    if (rendered.has(f.seq)) return; // deduplicated by seq
    const text = String(f.text == null ? '' : f.text);
    const li = bubble(f.role, text, author(f), f.created_at);
    li.dataset.seq = String(f.seq);
    insertBySeq(li, f.seq);
    rendered.set(f.seq, { li, role: f.role });
    st.lastSeq = Math.max(st.lastSeq, f.seq);
    if (f.role !== 'customer' && f.seq > st.quietUpTo) announce(`${author(f)}: ${text}`);
    if (follow || mine) toBottom();
    updateUnread();
  }

  function announce(text) {
    els.live.append(h('p', null, text));
    while (els.live.childElementCount > 3) els.live.firstElementChild.remove();
  }

  function showPending(item) {
    if (pendingEls.has(item.client_id) || confirmed.has(item.client_id)) return;
    const li = bubble('customer', item.text, T.you, null, T.sending);
    li.classList.add('pending');
    els.list.append(li);
    pendingEls.set(item.client_id, li);
  }

  // The server stored it: drop the local copy and the outbox entry.
  function settle(clientId) {
    confirmed.add(clientId);
    forget(OUTBOX_KEY + clientId);
    const li = pendingEls.get(clientId);
    if (!li) return false;
    li.remove();
    pendingEls.delete(clientId);
    return true;
  }

  function clearConversation() {
    for (const { li } of rendered.values()) li.remove();
    rendered.clear();
    st.lastSeq = 0;
    st.conversation = null;
    updateUnread();
  }

  function setThinking(on) {
    els.typing.hidden = !on;
  }

  // ---- unread badge -----------------------------------------------------------

  function readSeq() {
    const r = load(READ_KEY);
    return r && r.conversation === st.conversation ? r.seq : null;
  }

  // What an open panel on a visible tab shows is read; the badge counts the rest.
  function updateUnread() {
    const seen = st.open && document.visibilityState !== 'hidden' && st.conversation;
    if (seen && (readSeq() || 0) < st.lastSeq) save(READ_KEY, { conversation: st.conversation, seq: st.lastSeq });
    const read = readSeq() || 0;
    let n = 0;
    for (const [seq, { role }] of rendered) if (seq > read && role !== 'customer') n++;
    const show = n > 0 && !st.open;
    els.badge.hidden = !show;
    els.badge.textContent = n > 9 ? '9+' : String(n);
    const label = st.open ? T.close : T.open;
    els.launcher.setAttribute('aria-label', show ? `${label}, ${T.unread(n)}` : label);
  }

  // ---- open and close ---------------------------------------------------------

  function setOpen(open, byUser) {
    st.open = open;
    els.root.classList.toggle('open', open);
    els.panel.hidden = !open;
    els.launcher.setAttribute('aria-expanded', String(open));
    els.launcher.replaceChildren(icon(open ? DOWN_ICON : CHAT_ICON), els.badge);
    save(OPEN_KEY, open);
    updateUnread();
    if (open) {
      toBottom();
      if (byUser) els.input.focus();
      if (!st.ws && !st.timer) connect();
    } else if (byUser) {
      els.launcher.focus();
    }
  }

  // ---- sending ----------------------------------------------------------------

  function send(frame) {
    if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(frame));
  }

  function trySend(item) {
    if (st.ready) send({ type: 'message', client_id: item.client_id, text: item.text });
  }

  // The server dedupes by client_id, so re-sending is always safe.
  const resendOutbox = () => outbox().forEach(trySend);

  function submit() {
    const text = els.input.value.trim();
    if (!text || st.blocked) return;
    if ([...text].length > MAX_CHARS) { showNotice(T.tooLong); return; }
    showNotice('');
    const item = { client_id: newClientId(), text, t: Date.now() };
    save(OUTBOX_KEY + item.client_id, item);
    showPending(item);
    els.input.value = '';
    autosize();
    toBottom();
    trySend(item); // offline: it waits in the outbox for the next welcome
    if (!st.ws && !st.timer) connect();
  }

  function onKey(ev) {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); submit(); }
  }

  function autosize() {
    els.input.style.height = 'auto';
    els.input.style.height = `${Math.min(els.input.scrollHeight + 2, 128)}px`;
  }

  // ---- server frames ----------------------------------------------------------

  function onFrame(ws, data) {
    if (ws !== st.ws) return;
    alive();
    const f = parse(data);
    if (!f || typeof f !== 'object') return;
    if (f.type === 'welcome') onWelcome(f);
    else if (f.type === 'message') onMessage(f);
    else if (f.type === 'status') setThinking(f.assistant === 'thinking');
    else if (f.type === 'error') onError(f);
    // Other types (pong, future ones) are ignored, as protocol version 1 asks.
  }

  function onWelcome(f) {
    if (st.conversation && f.conversation_id !== st.conversation) {
      // A new conversation: its seqs start again at 1, so start from scratch.
      clearConversation();
      drop();
      connect();
      return;
    }
    st.conversation = f.conversation_id;
    st.quietUpTo = st.resuming ? 0 : f.last_seq; // what was missed while away is news
    st.ready = true;
    st.attempt = 0;
    if (readSeq() === null) save(READ_KEY, { conversation: f.conversation_id, seq: f.last_seq }); // new device
    setConn('open');
    startPing();
    resendOutbox();
  }

  function onError(f) {
    if (f.code === 'invalid_token') {
      // The stored identity is no good: forget it, start a new conversation.
      const saved = load(VISITOR_KEY);
      if (saved && st.visitor && saved.token === st.visitor.token) forget(VISITOR_KEY);
      st.visitor = null;
      clearConversation();
    } else if (f.code === 'internal') {
      setTimeout(resendOutbox, 2000); // with the same client_ids
    } else {
      console.warn(`Helpline: ${f.code}: ${f.message}`);
    }
  }

  // ---- connection -------------------------------------------------------------

  class Refused extends Error {}

  async function register() {
    const init = { method: 'POST', mode: 'cors', credentials: 'omit' };
    if (S.user_id) {
      init.headers = { 'Content-Type': 'application/json' };
      init.body = JSON.stringify({ user_id: S.user_id, user_hash: S.user_hash || '' });
    }
    const res = await fetch(`${ORIGIN}/api/visitors`, init);
    const body = await res.json().catch(() => null);
    if (res.status === 400 || res.status === 403) {
      const err = (body && body.error) || {};
      throw new Refused(`Helpline: ${err.code || res.status}: ${err.message || 'refused'}`);
    }
    if (!res.ok || !body || typeof body.token !== 'string') throw new Error(`Helpline: POST /api/visitors: HTTP ${res.status}`);
    return { visitor_id: body.visitor_id, token: body.token, user_id: S.user_id };
  }

  // One identity per browser: tabs opening at once must not each create one.
  async function identity() {
    const fresh = async () => {
      const saved = validVisitor(load(VISITOR_KEY));
      if (saved) return saved;
      const visitor = await register();
      save(VISITOR_KEY, visitor);
      return visitor;
    };
    return navigator.locks ? navigator.locks.request(KEY + 'register', fresh) : fresh();
  }

  async function connect() {
    clearTimeout(st.timer);
    st.timer = null;
    if (st.ws || st.starting || st.blocked) return;
    setConn('connecting');
    if (!st.visitor) {
      st.starting = true;
      try {
        st.visitor = await identity();
      } catch (err) {
        if (err instanceof Refused) {
          // Wrong user_hash or a bad setting: retrying will not help.
          console.error(err.message);
          st.blocked = true;
          setConn('blocked');
          showNotice(T.refused);
        } else {
          console.warn(err.message || err);
          schedule();
        }
        return;
      } finally {
        st.starting = false;
      }
    }
    let ws;
    try {
      ws = new WebSocket(WS_URL);
    } catch (err) {
      console.warn(err);
      schedule();
      return;
    }
    st.ws = ws;
    st.ready = false;
    ws.onopen = () => {
      const hello = { type: 'hello', token: st.visitor.token };
      if (st.lastSeq > 0) hello.after_seq = st.lastSeq; // else the whole history
      st.resuming = st.lastSeq > 0;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => onFrame(ws, ev.data);
    ws.onclose = () => {
      if (ws !== st.ws) return;
      lost();
      schedule();
    };
  }

  function lost() {
    st.ws = null;
    st.ready = false;
    stopPing();
    setThinking(false);
  }

  // Gives up on the current socket at once (dead, offline, superseded).
  function drop() {
    const ws = st.ws;
    if (!ws) return;
    lost();
    ws.onclose = ws.onmessage = null;
    ws.close();
  }

  // Exponential backoff with jitter: a random delay in [base/2, base].
  function schedule() {
    if (st.timer || st.blocked) return;
    const offline = navigator.onLine === false;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** st.attempt);
    st.attempt = Math.min(st.attempt + 1, 10);
    setConn(offline ? 'offline' : 'connecting');
    // Offline, the 'online' event reconnects; the timer is only a fallback.
    st.timer = setTimeout(connect, offline ? BACKOFF_MAX_MS : base / 2 + Math.random() * (base / 2));
  }

  // Reconnect now (network back, tab visible again), or check a quiet socket.
  function wake() {
    if (st.blocked || (!st.visitor && !st.open && !outbox().length)) return;
    if (!st.ws) { st.attempt = 0; connect(); return; }
    if (st.ready) { send({ type: 'ping' }); expectPong(5000); }
  }

  function startPing() {
    stopPing();
    st.pingTimer = setInterval(() => { send({ type: 'ping' }); expectPong(PONG_TIMEOUT_MS); }, PING_EVERY_MS);
  }

  function expectPong(ms) {
    if (!st.pongTimer) st.pongTimer = setTimeout(() => { st.pongTimer = null; drop(); schedule(); }, ms);
  }

  function alive() { clearTimeout(st.pongTimer); st.pongTimer = null; }

  function stopPing() { clearInterval(st.pingTimer); st.pingTimer = null; alive(); }

  // ---- other tabs of the same visitor -------------------------------------------

  function onStorage(ev) {
    if (!ev.key || !ev.key.startsWith(KEY)) return;
    if (ev.key === VISITOR_KEY) {
      const v = validVisitor(parse(ev.newValue));
      if (v && (!st.visitor || v.token !== st.visitor.token)) {
        // Another tab has a new identity (e.g. after invalid_token): follow it.
        st.visitor = v;
        clearConversation();
        drop();
        connect();
      }
    } else if (ev.key.startsWith(OUTBOX_KEY) && ev.newValue) {
      const item = validItem(parse(ev.newValue)); // typed in another tab: show it here too
      if (item) { showPending(item); trySend(item); }
    } else if (ev.key === READ_KEY) {
      updateUnread();
    }
  }

  // ---- start ------------------------------------------------------------------

  // Someone else signed in or out: nothing of the previous identity may leak
  // into the new one (its token, its unsent messages, its read marker).
  function forgetOtherIdentity() {
    const saved = load(VISITOR_KEY);
    if (!saved || validVisitor(saved)) return;
    forget(VISITOR_KEY);
    forget(READ_KEY);
    for (const item of outbox()) forget(OUTBOX_KEY + item.client_id);
  }

  function start() {
    forgetOtherIdentity();
    els = build();
    outbox().forEach(showPending); // typed before a reload, not yet confirmed
    window.addEventListener('online', wake);
    window.addEventListener('offline', () => { if (st.ws) { drop(); schedule(); } setConn('offline'); });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') { wake(); updateUnread(); }
    });
    window.addEventListener('storage', onStorage);
    st.visitor = validVisitor(load(VISITOR_KEY));
    setOpen(load(OPEN_KEY) === true, false);
    // A first-time anonymous visitor gets an identity only once they open the chat.
    if (st.visitor || S.user_id || outbox().length) connect();
  }

  window.Helpline = {
    version: 1,
    open: () => els && setOpen(true, true),
    close: () => els && setOpen(false, true),
  };
  if (document.body) start();
  else document.addEventListener('DOMContentLoaded', start);
})();
