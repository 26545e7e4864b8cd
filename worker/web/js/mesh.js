// The mesh page: the ChatAgent's workers with their load over the last minutes, the partitions
// coloured by owner, moves as they happen, and moves of a conversation or a partition.

import { ApiError, describe } from './api.js';
import { el, show, svg, timeOf } from './dom.js';
import { alertText, failWith, setUpSignIn } from './signin.js';

const $ = (id) => document.getElementById(id);
const EVERY_MS = 1000;

// light colours: dark text on any of them passes WCAG AA
const PALETTE = ['#cfe3ff', '#ffd9b3', '#cdeec0', '#f1d3f7', '#fff0a0', '#c6efef', '#ead9c6', '#f8c9c9'];

let session = null;
let timer = null;
let last = null;
let lastShown = '';

const signedOut = setUpSignIn({
  content: $('mesh'),
  onSignedIn: async (s) => {
    session = s;
    const operator = s.who.role === 'operator';
    $('move-partition-submit').disabled = !operator;
    show($('partition-note'), !operator);
    await poll();
  },
  onSignedOut: () => {
    clearTimeout(timer);
    session = null;
  },
});
const fail = failWith(signedOut);

async function poll() {
  clearTimeout(timer);
  if (!session) return;
  try {
    const mesh = await session.get('/api/mesh');
    // written only when it changes: a status region re-announces what is written to it
    const status = `Live via ${session.base}`;
    if ($('connection').textContent !== status) $('connection').textContent = status;
    $('connection').dataset.state = 'live';
    if ($('alert').dataset.from === 'poll') {
      delete $('alert').dataset.from;
      alertText('');
    }
    render(mesh);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      show($('mesh'), false);
      alertText(
        'The mesh page is for admins and the mesh operator: this token is a plain user\u2019s. ' +
          'Sign out and sign in with an admin or operator token.',
      );
      return;
    }
    fail(err);
    $('alert').dataset.from = 'poll';
    $('connection').textContent = 'Reconnecting…';
    $('connection').dataset.state = 'reconnecting';
  }
  timer = setTimeout(poll, EVERY_MS);
}

/** Worker id → colour, by sorted id so a worker keeps its colour while the page is open. */
function colours(workers) {
  const ids = workers.map((w) => w.id).sort();
  return new Map(ids.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
}

function rateOf(w) {
  return w.partitions.reduce((sum, p) => sum + p.messagesPerSecond, 0);
}

function stateOf(w) {
  if (!w.alive) return ['dead', 'state-dead'];
  if (w.draining) return ['draining', 'state-draining'];
  return ['alive', ''];
}

function render(mesh) {
  last = mesh;
  // rebuilt only when something shown changed (ages of heartbeats are not shown), so a
  // reader's place on the page stays put between changes
  const shown = JSON.stringify({ ...mesh, workers: mesh.workers.map((w) => ({ ...w, lastSeenMs: 0 })) });
  if (shown === lastShown) return;
  lastShown = shown;
  const colour = colours(mesh.workers);
  $('agent').textContent = mesh.agent;
  $('generation').textContent = String(mesh.generation);
  const alive = mesh.workers.filter((w) => w.alive);
  $('rate').textContent = alive.reduce((s, w) => s + rateOf(w), 0).toFixed(1);
  $('alive').textContent = `${alive.length} of ${mesh.workers.length}`;
  $('partition-count').textContent = String(mesh.partitions.length);

  const moving = new Map(mesh.moves.filter((m) => m.state === 'moving').map((m) => [m.partition, m]));
  const owned = new Map();
  for (const p of mesh.partitions) owned.set(p.owner, (owned.get(p.owner) || 0) + 1);

  $('workers').replaceChildren(
    ...mesh.workers.map((w) => {
      const [state, cls] = stateOf(w);
      return el('tr', { 'data-worker': w.id }, [
        el('th', { scope: 'row' }, [swatch(colour.get(w.id)), w.id]),
        el('td', { class: cls }, [state]),
        // a dead worker's last report is stale: its figures are not shown as current
        el('td', {}, [w.alive ? w.loadFactor.toFixed(2) : '–']),
        el('td', {}, [spark(w)]),
        el('td', {}, [w.alive ? rateOf(w).toFixed(1) : '–']),
        el('td', {}, [String(owned.get(w.id) || 0)]),
      ]);
    }),
  );

  $('grid').replaceChildren(
    ...mesh.partitions.map((p) => {
      const m = moving.get(p.partition);
      const label = m
        ? `Partition ${p.partition}: moving from ${m.from} to ${m.to}`
        : `Partition ${p.partition}: owned by ${p.owner || 'nobody'}`;
      const cell = el('li', {
        class: `cell${m ? ' moving' : ''}${p.owner ? '' : ' unowned'}`,
        'data-partition': String(p.partition),
        'data-owner': p.owner || '',
        'aria-label': label,
        title: label,
      }, [el('span', { class: 'num' }, [String(p.partition)]), p.owner || '—']);
      if (p.owner) cell.style.setProperty('background-color', colour.get(p.owner) || '#ffffff');
      return cell;
    }),
  );

  const moves = [...mesh.moves].reverse();
  $('moves').replaceChildren(
    ...moves.map((m) => {
      // a failover's pause starts when the balancer reassigned the partition; the silence
      // before (the heartbeat timeout) is not in it
      const pause = m.state === 'moving'
        ? 'moving…'
        : m.state === 'superseded'
          ? 'superseded'
          : m.pauseMs == null
            ? 'done'
            : m.reason === 'failover'
              ? `served again ${m.pauseMs} ms after reassignment`
              : `paused ${m.pauseMs} ms`;
      return el('li', { 'data-partition': String(m.partition), 'data-to': m.to, 'data-epoch': String(m.epoch), 'data-state': m.state }, [
        el('strong', {}, [`Partition ${m.partition}`]),
        `: ${m.from || 'nobody'} → ${m.to} · ${pause} `,
        el('span', { class: 'reason' }, [`(${m.reason || 'moved'}, ${timeOf(m.startedAt)})`]),
      ]);
    }),
  );
  show($('no-moves'), moves.length === 0);
  $('refused').replaceChildren(
    ...mesh.refusedMigrations.map((r) => el('li', {}, [`Refused ${r.requestId}: ${r.reason}`])),
  );

  fillTargets($('move-conversation-target'), mesh.workers);
  fillTargets($('move-partition-target'), mesh.workers);
  fillOptions(
    $('move-partition-number'),
    mesh.partitions.map((p) => [String(p.partition), `${p.partition} (on ${p.owner || 'nobody'})`]),
  );
}

function swatch(colour) {
  const s = el('span', { class: 'swatch', 'aria-hidden': 'true' });
  s.style.setProperty('background-color', colour || '#ffffff');
  return s;
}

/** Load over the history the worker's heartbeats gave (about 10 minutes). */
function spark(w) {
  const points = w.history || [];
  const width = 120;
  const height = 28;
  const label = `load of ${w.id} over the last ${Math.max(1, Math.round(points.length * 5 / 60))} min, now ${w.loadFactor.toFixed(2)}`;
  if (points.length < 2) return el('span', { class: 'help' }, ['collecting…']);
  const t0 = points[0][0];
  const span = Math.max(1, points[points.length - 1][0] - t0);
  const top = Math.max(1, ...points.map((p) => p[1]));
  const coords = points
    .map((p) => `${(((p[0] - t0) / span) * width).toFixed(1)},${(height - (p[1] / top) * (height - 2) - 1).toFixed(1)}`)
    .join(' ');
  return svg('svg', { class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label }, [
    svg('title', {}, [label]),
    svg('polyline', { points: coords, fill: 'none', stroke: '#1f5fbf', 'stroke-width': 1.5 }),
  ]);
}

function fillTargets(select, workers) {
  fillOptions(
    select,
    workers.filter((w) => w.alive && !w.draining).map((w) => [w.id, w.id]),
  );
}

/** Options of `select`, keeping what the person picked. */
function fillOptions(select, options) {
  const keep = select.value;
  const now = [...select.options].map((o) => `${o.value}=${o.textContent}`).join('|');
  const want = options.map(([v, t]) => `${v}=${t}`).join('|');
  if (now === want) return;
  select.replaceChildren(...options.map(([v, t]) => el('option', { value: v }, [t])));
  if (options.some(([v]) => v === keep)) select.value = keep;
}

async function migrate(body) {
  const result = $('action-result');
  result.textContent = 'Asking the balancer…';
  try {
    // once: a lost answer must not move things twice
    const r = await session.postOnce('/api/agent/migrate', body);
    result.textContent = `Move started: partitions ${r.partitions.join(', ')} from ${r.sourceNode} to ${r.targetNode} (about ${r.estimatedTime}).`;
    poll();
  } catch (err) {
    result.textContent = `Not moved: ${describe(err)}`;
    if (err instanceof ApiError && err.status === 401) fail(err);
  }
}

$('move-conversation').addEventListener('submit', (e) => {
  e.preventDefault();
  migrate({ conversationId: $('move-conversation-id').value.trim(), targetNode: $('move-conversation-target').value });
});

$('move-partition').addEventListener('submit', (e) => {
  e.preventDefault();
  migrate({ partitions: [Number($('move-partition-number').value)], targetNode: $('move-partition-target').value });
});

window.meshchatMesh = () => last;
