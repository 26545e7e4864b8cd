// One conversation as the page shows it, built from history pages and live events in any
// overlap: a message shows once whatever delivered it, a reply streams token by token and is
// replaced by the stored reply. Pure (no DOM), tested with `node --test`.

/** Orders (epoch, attempt): a higher epoch or attempt restarts a reply's text. */
function newer(a, b) {
  return a.epoch !== b.epoch ? a.epoch > b.epoch : a.attempt > b.attempt;
}

export class Thread {
  constructor(id) {
    this.id = id;
    /** Message ids in display order. */
    this.order = [];
    /** id → message view (the API's shape), plus `streaming` for replies being written. */
    this.byId = new Map();
    /** answered message id → { epoch, attempt, chunks: Map(seq → delta) } of its reply */
    this.streams = new Map();
    /** Messages whose stored reply is here. */
    this.answered = new Set();
    /** Older messages exist before the first shown. */
    this.hasMore = false;
    this.historyLoaded = false;
    this.participants = new Set();
    /** user → online */
    this.online = new Map();
    /** Message ids the live stream delivered. */
    this.liveSeen = new Set();
    /** Events the live stream delivered twice: an exact resume keeps this 0. */
    this.duplicates = 0;
  }

  /** The newest page of history (`GET /api/chat/conversation/{id}?limit=`). */
  loadLatest(view) {
    const fromHistory = view.messages.map((m) => m.id);
    for (const m of view.messages) this.put(m);
    const liveOnly = this.order.filter((id) => !fromHistory.includes(id));
    this.order = [...fromHistory, ...liveOnly];
    this.hasMore = Boolean(view.hasMore);
    this.historyLoaded = true;
    for (const p of view.participants || []) this.participants.add(p);
  }

  /** An older page (`?before=<first shown id>`); returns how many messages it added. */
  loadOlder(view) {
    const added = view.messages.filter((m) => !this.byId.has(m.id));
    for (const m of added) this.put(m);
    this.order = [...added.map((m) => m.id), ...this.order];
    this.hasMore = Boolean(view.hasMore);
    return added.length;
  }

  /** The first message shown (the `before` of the next older page). */
  firstId() {
    return this.order[0];
  }

  /** A message the user just sent, shown until its `message` event arrives. */
  pending(id, sender, content) {
    if (this.byId.has(id)) return;
    this.byId.set(id, { id, sender, content, timestamp: new Date().toISOString(), pending: true });
    this.order.push(id);
  }

  /**
   * The send of pending message `localId` was accepted as `messageId`: the pending message
   * takes that id, or goes if its `message` event came first.
   */
  confirm(localId, messageId) {
    const m = this.byId.get(localId);
    if (!m) return;
    this.byId.delete(localId);
    if (this.byId.has(messageId)) {
      this.order = this.order.filter((x) => x !== localId);
    } else {
      this.byId.set(messageId, { ...m, id: messageId });
      this.order = this.order.map((x) => (x === localId ? messageId : x));
    }
  }

  /** A send that failed: its pending message goes. */
  dropPending(id) {
    const m = this.byId.get(id);
    if (m && m.pending) {
      this.byId.delete(id);
      this.order = this.order.filter((x) => x !== id);
    }
  }

  /**
   * Stores `m`; the caller places a new one in `order`. A reply takes the place of the
   * streamed text of its message, if shown.
   */
  put(m) {
    this.byId.set(m.id, { ...m, streaming: false, pending: false });
    if (m.inReplyTo) {
      this.answered.add(m.inReplyTo);
      this.streams.delete(m.inReplyTo);
      const viewId = `stream:${m.inReplyTo}`;
      if (this.byId.has(viewId)) {
        this.byId.delete(viewId);
        this.order = this.order.includes(m.id)
          ? this.order.filter((x) => x !== viewId)
          : this.order.map((x) => (x === viewId ? m.id : x));
      }
    }
    if (m.sender && !m.inReplyTo) this.participants.add(m.sender);
  }

  /**
   * Applies one live event (the JSON of an SSE `data:` or a WebSocket frame). Returns the ids
   * of the messages it changed.
   */
  apply(ev) {
    switch (ev.type) {
      case 'message':
      case 'reply': {
        if (this.liveSeen.has(ev.message.id)) {
          this.duplicates += 1;
          return [];
        }
        this.liveSeen.add(ev.message.id);
        const had = this.byId.get(ev.message.id);
        // already shown from history (the stream and a history page overlap)
        if (had && !had.pending && !had.streaming) return [];
        // the user's own message, arrived before its send was answered: it takes the place
        // of the oldest pending message with the same text
        if (!had && !ev.message.inReplyTo) {
          const local = this.order.find((id) => {
            const m = this.byId.get(id);
            return m && m.pending && m.sender === ev.message.sender && m.content === ev.message.content;
          });
          if (local) {
            this.byId.delete(local);
            this.order = this.order.map((x) => (x === local ? ev.message.id : x));
            this.put(ev.message);
            return [ev.message.id];
          }
        }
        if (had && had.pending) {
          // the message the user sent, now in the log: keep its place
          this.byId.set(ev.message.id, { ...ev.message, streaming: false, pending: false });
          this.participants.add(ev.message.sender);
          return [ev.message.id];
        }
        const streamed = ev.message.inReplyTo && this.byId.has(`stream:${ev.message.inReplyTo}`);
        if (!had && !streamed) this.order.push(ev.message.id);
        this.put(ev.message);
        return [ev.message.id];
      }
      case 'token':
        return this.token(ev);
      case 'presence': {
        if (ev.kind === 'joined') this.participants.add(ev.userId);
        if (ev.kind === 'left') this.participants.delete(ev.userId);
        if (ev.kind === 'online' || ev.kind === 'joined') this.online.set(ev.userId, true);
        if (ev.kind === 'offline' || ev.kind === 'left') this.online.set(ev.userId, false);
        return [];
      }
      default:
        return [];
    }
  }

  token(ev) {
    // one reply per message: a new owner (after a move or a failover) writes it again, maybe
    // under another reply id, so streams are kept per answered message
    if (this.answered.has(ev.inReplyTo)) return [];
    const viewId = `stream:${ev.inReplyTo}`;
    let s = this.streams.get(ev.inReplyTo);
    if (!s || newer(ev, s)) {
      // a new attempt or a new owner writes the reply again from its start
      s = { epoch: ev.epoch, attempt: ev.attempt, chunks: new Map() };
      this.streams.set(ev.inReplyTo, s);
    } else if (newer(s, ev)) {
      return [];
    }
    if (s.chunks.has(ev.seq)) {
      this.duplicates += 1;
      return [];
    }
    s.chunks.set(ev.seq, ev.delta);
    const text = [...s.chunks.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]).join('');
    if (!this.byId.has(viewId)) this.order.push(viewId);
    this.byId.set(viewId, {
      id: viewId,
      replyId: ev.replyId,
      sender: 'assistant',
      content: text,
      inReplyTo: ev.inReplyTo,
      streaming: true,
      // the first chunk seen was not the first written: the start is missing until the reply
      partial: !s.chunks.has(0),
    });
    return [viewId];
  }

  /** Whether a reply is being written (the Stop button's state). */
  streaming() {
    return this.streams.size > 0;
  }

  /** Messages in display order. */
  messages() {
    return this.order.map((id) => this.byId.get(id)).filter(Boolean);
  }
}
