// The chat page's conversation model (node --test; run by the worker's cargo tests).
import assert from 'node:assert/strict';
import test from 'node:test';

import { Thread } from '../web/js/thread.js';

const user = (id, content = id) => ({ id, sender: 'alice', content, timestamp: '2026-11-30T10:00:00Z' });
const reply = (id, to, content, extra = {}) => ({
  id, sender: 'agent', content, inReplyTo: to, timestamp: '2026-11-30T10:00:01Z', ...extra,
});
const token = (replyId, seq, delta, epoch = 1, attempt = 0) => ({
  type: 'token', inReplyTo: 'm1', replyId, epoch, attempt, seq, delta,
});
const texts = (t) => t.messages().map((m) => m.content);

test('history and live events in any overlap show each message once, in order', () => {
  const t = new Thread('c');
  t.apply({ type: 'message', message: user('m3') });
  t.loadLatest({ messages: [user('m1'), reply('r1', 'm1', 'a1'), user('m2'), user('m3')], hasMore: true, participants: ['alice'] });
  t.apply({ type: 'message', message: user('m4') });
  assert.deepEqual(t.order, ['m1', 'r1', 'm2', 'm3', 'm4']);
  assert.equal(t.hasMore, true);
  t.loadOlder({ messages: [user('m0'), user('m1')], hasMore: false });
  assert.deepEqual(t.order, ['m0', 'm1', 'r1', 'm2', 'm3', 'm4']);
  assert.equal(t.firstId(), 'm0');
  assert.equal(t.duplicates, 0);
  t.apply({ type: 'message', message: user('m4') });
  assert.equal(t.duplicates, 1, 'the stream repeated m4');
  // what history showed and the stream then delivers is an overlap, not a repeat
  t.apply({ type: 'message', message: user('m2') });
  assert.equal(t.duplicates, 1);
  assert.deepEqual(t.order, ['m0', 'm1', 'r1', 'm2', 'm3', 'm4']);
});

test('a reply streams token by token, out of order or repeated, then the stored reply replaces it', () => {
  const t = new Thread('c');
  t.apply({ type: 'message', message: user('m1') });
  t.apply(token('r1', 0, 'Hel'));
  t.apply(token('r1', 2, ' there'));
  t.apply(token('r1', 1, 'lo'));
  assert.deepEqual(texts(t), ['m1', 'Hello there']);
  assert.deepEqual(t.order, ['m1', 'stream:m1']);
  assert.equal(t.streaming(), true);
  t.apply(token('r1', 1, 'lo'));
  assert.equal(t.duplicates, 1);
  t.apply({ type: 'reply', message: reply('r1', 'm1', 'Hello there!') });
  assert.deepEqual(texts(t), ['m1', 'Hello there!']);
  assert.deepEqual(t.order, ['m1', 'r1'], 'the reply takes the streamed text\'s place');
  assert.equal(t.streaming(), false);
  assert.equal(t.byId.get('r1').streaming, false);
  // a late token of the finished reply changes nothing
  assert.deepEqual(t.apply(token('r1', 3, 'x')), []);
});

test('a new attempt or a new owner (epoch) restarts the text; older ones are ignored', () => {
  const t = new Thread('c');
  const shown = () => t.byId.get('stream:m1').content;
  t.apply(token('r1', 0, 'first try '));
  t.apply(token('r1', 1, 'cut'));
  t.apply(token('r1', 0, 'second', 1, 1));
  assert.equal(shown(), 'second');
  t.apply(token('r1', 2, 'stale', 1, 0));
  assert.equal(shown(), 'second');
  // a new owner may write the reply under another reply id
  t.apply(token('r2', 0, 'moved', 2, 0));
  t.apply(token('r1', 1, ' on'));
  assert.equal(shown(), 'moved', 'the older epoch is ignored');
  t.apply(token('r2', 1, ' on', 2, 0));
  assert.equal(shown(), 'moved on');
  assert.deepEqual(t.order, ['stream:m1']);
  t.apply({ type: 'reply', message: reply('r3', 'm1', 'moved on.') });
  assert.deepEqual(t.order, ['r3']);
  assert.deepEqual(t.apply(token('r2', 2, ' late', 2, 0)), [], 'answered: later tokens change nothing');
  assert.deepEqual(texts(t), ['moved on.']);
});

test('a reply joined mid-stream says so until it is stored', () => {
  const t = new Thread('c');
  t.apply(token('r1', 4, 'end'));
  assert.equal(t.byId.get('stream:m1').partial, true);
  t.apply({ type: 'reply', message: reply('r1', 'm1', 'the whole end') });
  assert.equal(t.byId.get('r1').content, 'the whole end');
});

test('a pending message takes its id when the send is accepted, or goes if its event came first', () => {
  const t = new Thread('c');
  t.pending('local-1', 'alice', 'hi');
  t.pending('local-2', 'alice', 'again');
  t.confirm('local-1', 'm1');
  assert.deepEqual(t.order, ['m1', 'local-2']);
  t.apply({ type: 'message', message: user('m1', 'hi') });
  assert.equal(t.duplicates, 0, 'the event of a pending message is not a repeat');
  assert.deepEqual([...t.participants], ['alice'], 'its sender takes part');
  assert.equal(t.byId.get('m1').pending, false);
  t.apply({ type: 'message', message: user('m2', 'again') });
  t.confirm('local-2', 'm2');
  assert.deepEqual(t.order, ['m1', 'm2']);
  t.pending('local-3', 'alice', 'lost');
  t.dropPending('local-3');
  assert.deepEqual(t.order, ['m1', 'm2']);
});

test('presence: who takes part and who is online', () => {
  const t = new Thread('c');
  t.loadLatest({ messages: [], participants: ['alice', 'bob'] });
  t.apply({ type: 'presence', userId: 'bob', kind: 'online' });
  t.apply({ type: 'presence', userId: 'carol', kind: 'joined' });
  t.apply({ type: 'presence', userId: 'bob', kind: 'offline' });
  assert.deepEqual([...t.participants].sort(), ['alice', 'bob', 'carol']);
  assert.equal(t.online.get('bob'), false);
  assert.equal(t.online.get('carol'), true);
});

test("the user's own message arriving before its send is answered shows once", () => {
  const t = new Thread('c');
  t.pending('local-1', 'alice', 'hi');
  t.pending('local-2', 'alice', 'hi');
  t.apply({ type: 'message', message: user('m9', 'hi') });
  assert.deepEqual(t.order, ['m9', 'local-2'], 'the oldest pending one takes the id');
  t.confirm('local-1', 'm9');
  assert.deepEqual(t.order, ['m9', 'local-2']);
  assert.equal(t.duplicates, 0);
});
