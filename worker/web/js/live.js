// A conversation's live events over SSE, as long as the page wants them: when the stream
// breaks (its worker drained or killed, a relay ended), it opens again — at the same worker,
// or at the next one when that one is gone — from the last event id it got, so the worker
// sends exactly the events after it: nothing twice, nothing missing.

import { ApiError } from './api.js';

const EVENTS = ['message', 'token', 'reply', 'presence'];
// a stream open this long counts as healthy: its next break retries at once
const HEALTHY_MS = 5000;
// a stream that never opened this many times in a row is asked why (EventSource hides it)
const PROBE_AFTER = 2;

export class LiveStream {
  /**
   * @param session the signed-in Session
   * @param conversationId the conversation
   * @param handlers { onEvent(data, receivedAt), onState(state, base), onError(err),
   *                   onResumedFromNow() — reopened without an event id: history may hold
   *                   events the stream will not send }
   */
  constructor(session, conversationId, handlers) {
    this.session = session;
    this.id = conversationId;
    this.h = handlers;
    this.lastId = null;
    this.es = null;
    this.closed = false;
    this.failures = 0;
    this.reconnects = 0;
    this.timer = null;
    this.openedOnce = false;
    this.ready = new Promise((resolve) => {
      this.markReady = resolve;
    });
  }

  /** Starts the stream; `ready` resolves once it is open (the history read goes after it). */
  start() {
    this.open();
    return this;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
    this.markReady();
  }

  async open() {
    if (this.closed) return;
    let ticket;
    try {
      ticket = await this.session.ticket();
    } catch (err) {
      this.h.onError(err);
      if (err instanceof ApiError && err.status === 401) return this.close();
      return this.retry(err instanceof ApiError ? err.retryAfter * 1000 : 0);
    }
    if (this.closed) return;
    const q = new URLSearchParams({ ticket: ticket.ticket, presence: '1' });
    const from = this.lastId;
    if (from) q.set('after', from);
    const url = `${ticket.base}/api/chat/conversation/${encodeURIComponent(this.id)}/events?${q}`;
    const es = new EventSource(url);
    this.es = es;
    let opened = false;
    let openedAt = 0;
    es.onopen = () => {
      opened = true;
      openedAt = Date.now();
      this.h.onState('live', ticket.base);
      // reopened without a position: what was written meanwhile is only in the history
      if (this.openedOnce && !from) this.h.onResumedFromNow();
      this.openedOnce = true;
      this.markReady();
    };
    const onEvent = (e) => {
      const receivedAt = performance.now();
      let data;
      try {
        data = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      if (e.lastEventId) this.lastId = e.lastEventId;
      else if (data.id) this.lastId = data.id;
      this.failures = 0;
      this.h.onEvent(data, receivedAt);
    };
    for (const name of EVENTS) es.addEventListener(name, onEvent);
    // lagged: the worker ends the stream; reopening from the last id reads the rest back
    es.addEventListener('lagged', () => {});
    es.onerror = async () => {
      if (this.es !== es) return;
      es.close();
      this.es = null;
      if (this.closed) return;
      if (opened && Date.now() - openedAt >= HEALTHY_MS) this.failures = 0;
      this.reconnects += 1;
      this.h.onState('reconnecting', ticket.base);
      if (!opened) {
        // never answered with a stream: why? a refusal (not a participant, deleted, limited)
        // is said and not retried; otherwise that worker cannot serve it now: the next one
        const refused = this.failures + 1 >= PROBE_AFTER ? await this.probe(url) : null;
        if (refused && refused.status !== 429) {
          this.h.onError(refused);
          this.h.onState('stopped', ticket.base);
          return this.close();
        }
        this.session.rotateFrom(ticket.base);
        return this.retry(refused ? refused.retryAfter * 1000 : 0);
      }
      this.retry(0);
    };
  }

  /** The status a stream URL answers, as an ApiError when it refuses (4xx). */
  async probe(url) {
    const ctl = new AbortController();
    try {
      const resp = await fetch(url, { signal: ctl.signal });
      if (resp.status >= 400 && resp.status < 500) {
        const body = await resp.json().catch(() => ({}));
        return new ApiError(resp.status, body);
      }
      return null;
    } catch (err) {
      return null;
    } finally {
      ctl.abort();
    }
  }

  retry(atLeastMs) {
    if (this.closed) return;
    this.failures += 1;
    const backoff = this.failures <= 1 ? 0 : Math.min(5000, 250 * 2 ** (this.failures - 2));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), Math.max(backoff, atLeastMs || 0));
  }
}
