// The chat page: sign in, the caller's conversations, one open conversation with its history
// (paged back on scroll), live events (streamed replies, presence) and a composer with Stop.

import { ApiError, describe, randomId } from './api.js';
import { LiveStream } from './live.js';
import { Thread } from './thread.js';
import { el, show, timeOf } from './dom.js';
import { alertText, failWith, setUpSignIn } from './signin.js';

const $ = (id) => document.getElementById(id);
const PAGE = 30;
const LIST_PAGE = 20;
const LIST_EVERY_MS = 10000;

// what the browser tests read: token → screen times, reconnects, repeated events
const metrics = { tokenToScreenMs: [], reconnects: 0, duplicates: 0, events: {}, answers: [] };
window.meshchatMetrics = metrics;

let session = null;
let thread = null;
let live = null;
let listCursor = null;
// pages of the list loaded after the first ("More conversations")
let listPages = 0;
let listTimer = null;
let listQueue = Promise.resolve();
const drafts = new Map();
const items = new Map();

const signedOut = setUpSignIn({
  content: $('app'),
  onSignedIn: async (s) => {
    session = s;
    session.onAnswer = (method, url, status) => {
      metrics.answers.push({ method, url, status });
      if (metrics.answers.length > 50) metrics.answers.shift();
    };
    listCursor = null;
    listPages = 0;
    await loadConversations(true);
    // conversations started elsewhere (another tab, the API) show up
    listTimer = setInterval(() => session && loadConversations(true), LIST_EVERY_MS);
  },
  onSignedOut: () => {
    if (live) live.close();
    live = null;
    clearInterval(listTimer);
    session = null;
    thread = null;
    items.clear();
    drafts.clear();
    $('messages').replaceChildren();
    $('conversations').replaceChildren();
    $('presence').textContent = '';
    $('conversation-title').textContent = 'No conversation open';
    $('composer-input').disabled = true;
    $('send').disabled = true;
    $('stop').disabled = true;
  },
});
const fail = failWith(signedOut);

// === the conversation list ===

async function loadConversations(first) {
  // one load at a time, in order: a refresh answering after a "More" must not skip a page
  const run = listQueue.then(() => loadListPage(first));
  listQueue = run.catch(() => {});
  return run;
}

async function loadListPage(first) {
  const asked = session;
  if (!asked) return;
  const q = new URLSearchParams({ limit: String(LIST_PAGE) });
  if (!first && listCursor) q.set('cursor', listCursor);
  let page;
  try {
    page = await asked.get(`/api/chat/conversations?${q}`);
  } catch (err) {
    return fail(err);
  }
  if (session !== asked) return;
  const ul = $('conversations');
  for (const c of page.conversations) drafts.delete(c.id);
  const items = page.conversations.map(listItem);
  if (first) {
    // the newest page on top; what later pages the reader loaded showed stays below it
    const ids = new Set(page.conversations.map((c) => c.id));
    const newDrafts = [...drafts.keys()].map((id) => listItem({ id, title: 'New conversation', messageCount: 0 }));
    const rest = listPages > 0
      ? [...ul.children].filter((li) => !ids.has(li.dataset.id) && !drafts.has(li.dataset.id))
      : [];
    const focused = document.activeElement && document.activeElement.closest('#conversations li');
    const focusedId = focused && focused.dataset.id;
    ul.replaceChildren(...newDrafts, ...items, ...rest);
    if (focusedId) ul.querySelector(`[data-id="${CSS.escape(focusedId)}"] button`)?.focus();
    if (listPages === 0) listCursor = page.nextCursor || null;
  } else {
    for (const c of page.conversations) {
      const old = ul.querySelector(`[data-id="${CSS.escape(c.id)}"]`);
      if (old) old.remove();
    }
    ul.append(...items);
    listCursor = page.nextCursor || null;
    listPages += 1;
  }
  show($('more-conversations'), Boolean(listCursor));
  show($('no-conversations'), ul.children.length === 0);
}

function listItem(c) {
  const open = thread && thread.id === c.id;
  const button = el('button', { type: 'button', class: 'conversation-link' }, [
    el('span', { class: 'title' }, [c.title || c.id]),
    el('span', { class: 'meta' }, [
      c.lastActivity
        ? `${c.messageCount} ${c.messageCount === 1 ? 'message' : 'messages'} · ${timeOf(c.lastActivity)}`
        : 'no messages yet',
    ]),
  ]);
  if (open) button.setAttribute('aria-current', 'true');
  button.addEventListener('click', () => openConversation(c.id, c.title));
  return el('li', { 'data-id': c.id }, [button]);
}

let listRefresh = null;
function refreshListSoon() {
  clearTimeout(listRefresh);
  listRefresh = setTimeout(() => session && loadConversations(true), 1200);
}

$('more-conversations').addEventListener('click', () => loadConversations(false));

$('new-conversation').addEventListener('click', () => {
  const id = randomId('c-');
  drafts.set(id, true);
  $('conversations').prepend(listItem({ id, title: 'New conversation', messageCount: 0 }));
  show($('no-conversations'), false);
  openConversation(id, 'New conversation');
  $('composer-input').focus();
});

// === one conversation ===

async function openConversation(id, title) {
  if (live) live.close();
  alertText('');
  const t = new Thread(id);
  thread = t;
  setConnection('connecting', '');
  items.clear();
  $('messages').replaceChildren();
  $('conversation-title').textContent = title || id;
  for (const b of document.querySelectorAll('.conversation-link')) b.removeAttribute('aria-current');
  const current = document.querySelector(`#conversations [data-id="${CSS.escape(id)}"] button`);
  if (current) current.setAttribute('aria-current', 'true');
  $('composer-input').disabled = false;
  $('send').disabled = false;
  // live first, then history: the stream is open before the history is read, so nothing
  // written in between is missing; what both show appears once (the thread merges)
  const stream = new LiveStream(session, id, {
    onEvent: (ev, at) => onLive(t, ev, at),
    onState: (state, base) => thread === t && setConnection(state, base),
    onError: (err) => {
      if (thread !== t) return;
      if (err instanceof ApiError && err.status === 401) fail(err);
      else if (err instanceof ApiError && err.status >= 400 && err.status < 500) alertText(describe(err));
    },
    onResumedFromNow: () => loadLatest(t),
  }).start();
  live = stream;
  await Promise.race([stream.ready, new Promise((r) => setTimeout(r, 5000))]);
  await loadLatest(t);
}

/** Reads the newest page of `t`'s history and merges it. */
async function loadLatest(t) {
  try {
    const view = await session.get(`/api/chat/conversation/${encodeURIComponent(t.id)}?limit=${PAGE}`);
    if (thread !== t) return;
    t.loadLatest(view);
  } catch (err) {
    if (thread !== t) return;
    if (!(err instanceof ApiError && err.status === 404)) fail(err);
    t.historyLoaded = true;
  }
  if (thread !== t) return;
  renderAll();
  scrollToEnd();
}

function onLive(t, ev, receivedAt) {
  metrics.events[ev.type] = (metrics.events[ev.type] || 0) + 1;
  if (thread !== t) return;
  const before = thread.duplicates;
  const changed = thread.apply(ev);
  metrics.duplicates += thread.duplicates - before;
  if (ev.type === 'presence' || ev.type === 'message') renderPresence();
  if (changed.length === 0) return;
  const stick = nearEnd();
  // a stored reply replaces its streamed text in place; everything else updates one item
  if (ev.type === 'reply') renderAll();
  else for (const mid of changed) renderItem(mid);
  updateStop();
  if (stick) scrollToEnd();
  if (ev.type === 'token') {
    requestAnimationFrame(() => metrics.tokenToScreenMs.push(performance.now() - receivedAt));
  }
  if (ev.type === 'reply') refreshListSoon();
}

function setConnection(state, base) {
  const c = $('connection');
  c.dataset.state = state;
  c.dataset.base = base || '';
  if (state === 'live') c.textContent = `Live via ${base}`;
  else if (state === 'connecting') c.textContent = 'Connecting…';
  else if (state === 'stopped') c.textContent = 'Not live';
  else {
    metrics.reconnects = live ? live.reconnects : metrics.reconnects;
    c.textContent = 'Reconnecting…';
  }
}

// === rendering ===

function classesOf(m) {
  const c = ['message', m.inReplyTo ? 'assistant' : 'user'];
  if (session && m.sender === session.who.user && !m.inReplyTo) c.push('own');
  if (m.pending) c.push('pending');
  if (m.streaming) c.push('streaming');
  if (m.error) c.push('error');
  if (m.cancelled) c.push('stopped');
  return c.join(' ');
}

function statusOf(m) {
  if (m.pending) return 'Sending…';
  if (m.streaming) return m.partial ? 'Writing… (joined mid-reply)' : 'Writing…';
  if (m.cancelled) return 'Stopped';
  if (m.error) return `Error: ${m.error.message}`;
  return '';
}

function renderItem(id) {
  const m = thread.byId.get(id);
  if (!m) return;
  let li = items.get(id);
  const fresh = !li;
  if (fresh) {
    li = el('li', {}, [
      el('p', { class: 'meta' }, [el('span', { class: 'sender' }), ' ', el('time')]),
      el('p', { class: 'text' }),
      el('p', { class: 'status' }),
    ]);
    items.set(id, li);
  }
  li.className = classesOf(m);
  li.dataset.id = id;
  // a reply being written is one change for assistive technology, announced when stored
  if (m.streaming) li.setAttribute('aria-busy', 'true');
  else li.removeAttribute('aria-busy');
  li.querySelector('.sender').textContent = m.inReplyTo ? `${m.sender || 'assistant'}` : m.sender;
  const t = li.querySelector('time');
  t.textContent = m.timestamp ? timeOf(m.timestamp) : '';
  if (m.timestamp) t.setAttribute('datetime', m.timestamp);
  li.querySelector('.text').textContent = m.content;
  const status = statusOf(m);
  li.querySelector('.status').textContent = status;
  show(li.querySelector('.status'), Boolean(status));
  if (fresh) $('messages').append(li);
}

function renderAll() {
  if (!thread) return;
  const ol = $('messages');
  const keep = new Set(thread.order);
  for (const [id, li] of items) {
    if (!keep.has(id)) {
      li.remove();
      items.delete(id);
    }
  }
  for (const id of thread.order) renderItem(id);
  // display order (history pages, confirmations and live events arrive in any order); only
  // nodes out of place move, so the log does not announce the whole conversation again
  let at = ol.firstElementChild;
  for (const li of thread.order.map((id) => items.get(id)).filter(Boolean)) {
    if (li === at) at = at.nextElementSibling;
    else ol.insertBefore(li, at);
  }
  show($('older'), thread.hasMore);
  renderPresence();
  updateStop();
}

function renderPresence() {
  const p = $('presence');
  const people = [...thread.participants].sort();
  if (people.length === 0) {
    p.textContent = '';
    return;
  }
  p.replaceChildren(
    'In this conversation: ',
    ...people.flatMap((u, i) => {
      const online = thread.online.get(u) || (session && u === session.who.user && live);
      const who = el('span', { class: online ? 'person online' : 'person' }, [u + (online ? ' (online)' : '')]);
      return i === 0 ? [who] : [', ', who];
    }),
  );
}

function awaitingReply() {
  return thread.streaming() || thread.messages().some((m) => !m.inReplyTo && !m.pending && !thread.answered.has(m.id));
}

function updateStop() {
  const stop = $('stop');
  const disable = !(thread && awaitingReply());
  // the reply ended while Stop had the focus: the message box takes it, not the page
  if (disable && document.activeElement === stop) $('composer-input').focus();
  stop.disabled = disable;
}

function nearEnd() {
  const log = $('log');
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
}

function scrollToEnd() {
  const log = $('log');
  log.scrollTop = log.scrollHeight;
}

async function loadOlder() {
  const t = thread;
  if (!t || !t.hasMore || t.loadingOlder) return;
  t.loadingOlder = true;
  const log = $('log');
  try {
    const q = new URLSearchParams({ limit: String(PAGE), before: t.firstId() });
    const view = await session.get(`/api/chat/conversation/${encodeURIComponent(t.id)}?${q}`);
    if (thread === t) {
      const from = log.scrollHeight - log.scrollTop;
      t.loadOlder(view);
      renderAll();
      log.scrollTop = log.scrollHeight - from;
    }
  } catch (err) {
    if (thread === t) fail(err);
  } finally {
    t.loadingOlder = false;
  }
}

$('log').addEventListener('scroll', () => {
  if ($('log').scrollTop < 40) loadOlder();
});
$('older').addEventListener('click', loadOlder);

// === composer ===

async function send() {
  const input = $('composer-input');
  const text = input.value.trim();
  const t = thread;
  if (!t || !text) return;
  const id = t.id;
  const key = randomId('k-');
  const localId = `local-${key}`;
  input.value = '';
  t.pending(localId, session.who.user, text);
  renderItem(localId);
  updateStop();
  scrollToEnd();
  try {
    // keyed: if the worker goes away mid-request, the retry at another is stored once
    const r = await session.post(
      '/api/chat/send',
      { conversationId: id, content: text },
      { 'Idempotency-Key': key },
    );
    if (thread === t) {
      t.confirm(localId, r.messageId);
      const li = items.get(localId);
      items.delete(localId);
      if (li && !items.has(r.messageId)) items.set(r.messageId, li);
      else if (li) li.remove();
      renderAll();
    }
    drafts.delete(id);
    refreshListSoon();
  } catch (err) {
    if (thread === t) {
      t.dropPending(localId);
      renderAll();
      if (!input.value) input.value = text;
    }
    fail(err);
  }
}

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});

$('composer-input').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});

$('stop').addEventListener('click', async () => {
  if (!thread) return;
  try {
    // once: a cancel stored twice would stop the next reply too
    await session.postOnce(`/api/chat/conversation/${encodeURIComponent(thread.id)}/cancel`);
  } catch (err) {
    fail(err);
  }
});
