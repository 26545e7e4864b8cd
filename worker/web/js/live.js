// A conversation's live events over SSE, as long as the page wants them: when the stream
// breaks (its worker drained or killed, a relay ended), it opens again — at the same worker,
// or at the next one when that one is gone — from the last event id it got, so the worker
// sends exactly the events after it: nothing twice, nothing missing.

const EVENTS = ['message', 'token', 'reply', 'presence'];

export class LiveStream {
  /**
   * @param session the signed-in Session
   * @param conversationId the conversation
   * @param handlers { onEvent(data, receivedAt), onState(state, detail), onError(err) }
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
  }

  start() {
    this.open();
    return this;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
  }

  async open() {
    if (this.closed) return;
    let ticket;
    try {
      ticket = await this.session.ticket();
    } catch (err) {
      this.h.onError(err);
      if (err.status === 401) return this.close();
      return this.retry();
    }
    if (this.closed) return;
    const q = new URLSearchParams({ ticket: ticket.ticket, presence: '1' });
    if (this.lastId) q.set('after', this.lastId);
    const url = `${ticket.base}/api/chat/conversation/${encodeURIComponent(this.id)}/events?${q}`;
    const es = new EventSource(url);
    this.es = es;
    let opened = false;
    es.onopen = () => {
      opened = true;
      this.failures = 0;
      this.h.onState('live', ticket.base);
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
      this.h.onEvent(data, receivedAt);
    };
    for (const name of EVENTS) es.addEventListener(name, onEvent);
    // lagged: the worker ends the stream; reopening from the last id reads the rest back
    es.addEventListener('lagged', () => {});
    es.onerror = () => {
      if (this.es !== es) return;
      es.close();
      this.es = null;
      // never answered with a stream: that worker cannot serve it now, try the next
      if (!opened) this.session.rotate();
      this.reconnects += 1;
      this.h.onState('reconnecting', ticket.base);
      this.retry();
    };
  }

  retry() {
    if (this.closed) return;
    this.failures += 1;
    const wait = this.failures <= 1 ? 0 : Math.min(5000, 250 * 2 ** (this.failures - 2));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), wait);
  }
}
