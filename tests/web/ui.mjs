// The web pages in a real browser: Debian's Chromium driven by playwright-core, against a
// running mesh that tests/tests/web_ui.rs started. It acts as a person would (typing, clicking,
// pressing keys), reads what the page shows, and writes what it saw as JSON for the Rust test
// to check against the API and the log.
//
//   node ui.mjs <config.json>
//
// config: { chromium, artifacts, out, chatUrl, userToken, adminToken, operatorToken, killPid,
//           killConversation, mesh: { url, conversation, partition } }

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { assistant, launch, sendMessage, signIn, waitReplies, waitStreaming } from './browser.mjs';

const require = createRequire(import.meta.url);
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const LONG = 90_000;
mkdirSync(config.artifacts, { recursive: true });

const out = { steps: [], console: [], cspViolations: [], axe: {} };
const log = (...a) => console.error('[ui]', ...a);

async function step(name, fn) {
  const started = Date.now();
  log(`${name}…`);
  try {
    const r = await fn();
    out.steps.push({ name, ms: Date.now() - started, ok: true });
    return r;
  } catch (err) {
    out.steps.push({ name, ms: Date.now() - started, ok: false, error: String(err && err.stack || err) });
    throw err;
  }
}

function watch(page, label) {
  page.on('console', (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to (load|execute|apply|connect)/i.test(text)) out.cspViolations.push(`${label}: ${text}`);
    if (m.type() === 'error') out.console.push(`${label}: ${text}`);
  });
  page.on('pageerror', (e) => out.console.push(`${label}: page error: ${e.message}`));
}

/** axe-core's serious and critical violations on what the page shows now. */
async function axe(page, name) {
  await page.evaluate(AXE);
  const r = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const res = await axe.run(document, { resultTypes: ['violations'] });
    return res.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,
      targets: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  out.axe[name] = r;
  log(`axe ${name}: ${r.length} violations (${r.map((v) => `${v.id}:${v.impact}`).join(', ')})`);
}

async function shot(page, name) {
  const path = join(config.artifacts, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/** An alive, not draining worker other than `owner`, as the mesh page's table shows. */
async function otherAliveWorker(page, owner) {
  const rows = await page.$$eval('#workers tr', (rows) => rows.map((r) => [r.dataset.worker, r.children[1].textContent]));
  const other = rows.find(([id, state]) => id !== owner && state === 'alive');
  if (!other) throw new Error(`no alive worker other than ${owner}: ${JSON.stringify(rows)}`);
  return other[0];
}

const browser = await launch(config.chromium);

try {
  // === the chat page ===
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  watch(page, 'chat');

  await step('open the chat page', async () => {
    await page.goto(config.chatUrl);
    await page.getByLabel('Access token').waitFor();
    out.firstPaintMs = await page.evaluate(() => {
      const p = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
      return p ? p.startTime : null;
    });
    out.signInTitle = await page.title();
    await shot(page, 'sign-in');
    await axe(page, 'sign-in');
  });

  await step('a wrong token is refused plainly', async () => {
    await signIn(page, 'mcdev_not-a-real-token');
    await page.locator('#alert:not([hidden])').waitFor();
    out.wrongTokenAlert = await page.locator('#alert').textContent();
  });

  await step('sign in, create a conversation, send, see the streamed reply complete', async () => {
    await signIn(page, config.userToken);
    await page.locator('#app:not([hidden])').waitFor();
    out.who = await page.locator('#who').textContent();
    out.meshLinkShownToUser = await page.locator('#mesh-link').isVisible();
    await page.getByRole('button', { name: 'New conversation' }).click();
    await page.locator('#connection[data-state="live"]').waitFor({ timeout: LONG });
    await sendMessage(page, 'Hello there [slow:150]');
    await waitStreaming(page, 1, 3);
    out.sawStreaming = true;
    const replies = await waitReplies(page, 1);
    out.firstReply = replies[0];
    out.newConversationId = await page.evaluate(() =>
      document.querySelector('#conversations [aria-current="true"]')?.closest('li')?.dataset.id);
    out.userMessages = await page.$$eval('#messages li.user', (l) => l.map((li) => li.querySelector('.text').textContent));
    // the list shows the conversation once its reply is indexed
    await page.waitForFunction(
      (id) => {
        const li = document.querySelector(`#conversations li[data-id="${id}"]`);
        return li && /\d+ messages?/.test(li.textContent);
      },
      out.newConversationId,
      { timeout: 30_000 },
    );
    out.presence = await page.locator('#presence').textContent();
    await shot(page, 'chat');
    await axe(page, 'chat');
  });

  await step('Stop mid-reply ends the reply as stopped; the next message is answered', async () => {
    await sendMessage(page, 'Tell me a long story [slow:250]');
    await waitStreaming(page, 2, 2);
    await page.getByRole('button', { name: 'Stop' }).click();
    await page.waitForFunction(() => {
      const li = document.querySelectorAll('#messages li.assistant')[1];
      return li && li.classList.contains('stopped');
    }, null, { timeout: LONG });
    const after = await assistant(page);
    out.stopped = after[1];
    await sendMessage(page, 'And now a short one');
    out.afterStop = (await waitReplies(page, 3))[2];
    out.stopDisabledAfter = await page.getByRole('button', { name: 'Stop' }).isDisabled();
  });

  await step('a model failure shows as an error reply', async () => {
    await sendMessage(page, 'This one fails [fail:503]');
    out.failed = (await waitReplies(page, 4))[3];
  });

  await step('a long history pages back as the reader scrolls up', async () => {
    await page.locator(`#conversations li[data-id="${config.longConversation}"] button`).click();
    await page.waitForFunction(() => document.querySelectorAll('#messages li').length >= 30, null, { timeout: LONG });
    out.longFirstPage = await page.locator('#messages li').count();
    out.longOlderButton = await page.getByRole('button', { name: 'Load earlier messages' }).isVisible();
    // scroll to the top until everything is there (each scroll to the top asks for a page)
    for (let i = 0; i < 10; i++) {
      await page.locator('#log').evaluate((log) => { log.scrollTop = 0; log.dispatchEvent(new Event('scroll')); });
      await page.waitForTimeout(300);
      if (!(await page.getByRole('button', { name: 'Load earlier messages' }).isVisible())) break;
    }
    // replies still being written arrive live: wait until none is
    await page.waitForFunction(() => !document.querySelector('#messages li.streaming'), null, { timeout: LONG });
    out.longAll = await page.$$eval('#messages li', (l) => l.map((li) => li.dataset.id));
    out.longFirstText = await page.locator('#messages li .text').first().textContent();
  });

  await step('SIGKILL of the worker the page talks to mid-reply: the page goes on elsewhere', async () => {
    // the conversation the Rust test made on the killed worker's partitions
    await page.locator(`#conversations li[data-id="${config.killConversation}"] button`).click();
    await page.waitForFunction(
      (id) => document.querySelector('#conversation-title').textContent.length > 0 &&
        document.querySelector(`#conversations li[data-id="${id}"] [aria-current="true"]`),
      config.killConversation,
    );
    await page.locator('#connection[data-state="live"]').waitFor({ timeout: LONG });
    await page.waitForFunction(() => document.querySelectorAll('#messages li.assistant').length >= 1, null, { timeout: LONG });
    const before = (await assistant(page)).length;
    out.killBase = await page.locator('#connection').getAttribute('data-base');
    await sendMessage(page, 'Keep talking while your worker dies [slow:150] [tag:webkill]');
    await waitStreaming(page, before + 1, 3);
    out.killTextBefore = (await assistant(page))[before].text;
    process.kill(config.killPid, 'SIGKILL');
    out.killedAt = Date.now();
    const replies = await waitReplies(page, before + 1, 120_000);
    out.killReplies = replies;
    out.killReply = replies[before];
    out.killRecoveredMs = Date.now() - out.killedAt;
    out.killAfterBase = await page.locator('#connection').getAttribute('data-base');
    out.killUserMessages = await page.$$eval('#messages li.user', (l) => l.map((li) => li.dataset.id));
    out.killMessageId = out.killUserMessages.at(-1);
    out.metrics = await page.evaluate(() => window.meshchatMetrics);
    // the reply's text shows once in the whole log
    out.killReplyShown = await page.$$eval('#messages li.assistant .text', (l, t) => l.filter((x) => x.textContent === t).length, out.killReply.text);
  });

  await step('rate limited: the wait is shown', async () => {
    const base = await page.locator('#connection').getAttribute('data-base');
    // the user's burst at this worker goes on requests of its own (not through the page), and
    // keeps the user's bucket empty while the page sends
    let limited = 0;
    let bursting = true;
    const burst = (async () => {
      for (let i = 0; bursting && i < 2000; i++) {
        const r = await fetch(`${base}/api/chat/send`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${config.userToken}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ conversationId: `burst-${i}`, content: 'burst' }),
        });
        if (r.status === 429) {
          limited += 1;
          if (limited === 1) out.rateBurstRefusal = await r.text();
        }
        out.rateBurstStatuses = out.rateBurstStatuses || {};
        out.rateBurstStatuses[r.status] = (out.rateBurstStatuses[r.status] || 0) + 1;
      }
    })();
    let finished = false;
    burst.then(() => { finished = true; });
    while (limited < 5 && !finished) await new Promise((r) => setTimeout(r, 50));
    await page.evaluate(() => { window.meshchatMetrics.answers = []; });
    await sendMessage(page, 'Am I limited?');
    const sendAnswer = () => window.meshchatMetrics.answers.find((a) => a.url.endsWith('/api/chat/send'));
    await page.waitForFunction(sendAnswer, null, { timeout: 30_000 });
    out.rateAnswer = await page.evaluate(sendAnswer);
    out.rateBurstBase = base;
    bursting = false;
    await page.locator('#alert:not([hidden])').waitFor({ timeout: 30_000 });
    await burst;
    out.burstLimited = limited;
    out.rateAlert = await page.locator('#alert').textContent();
    // the burst made many conversations: the list shows a page and pages on
    await page.waitForFunction(() => document.querySelectorAll('#conversations li').length >= 20, null, { timeout: 30_000 });
    const listed = () => page.$$eval('#conversations li', (l) => l.map((li) => li.dataset.id));
    out.listFirstPage = (await listed()).length;
    await page.getByRole('button', { name: 'More conversations' }).click();
    await page.waitForFunction((n) => document.querySelectorAll('#conversations li').length > n, out.listFirstPage, { timeout: 30_000 });
    out.listTwoPages = await listed();
    out.rateComposerKept = await page.getByLabel('Message', { exact: true }).inputValue();
  });

  await step('signed out: a token no longer accepted brings the sign-in form back', async () => {
    // the page's own worker is dead by now: the tab goes on at another one (tokens are kept
    // per origin, as sessionStorage is)
    await page.goto(`${config.mesh.url}/`);
    await page.evaluate(() => sessionStorage.setItem('meshchat.token', 'mcdev_revoked'));
    await page.reload();
    await page.getByLabel('Access token').waitFor();
    await page.locator('#alert:not([hidden])').waitFor();
    out.signedOutAlert = await page.locator('#alert').textContent();
    out.signInShownAgain = await page.locator('#sign-in').isVisible();
  });
  await ctx.close();

  // === the mesh page ===
  await step('a plain user is refused the mesh page', async () => {
    const c = await browser.newContext();
    const p = await c.newPage();
    watch(p, 'mesh-user');
    await p.goto(`${config.mesh.url}/mesh`);
    await signIn(p, config.userToken);
    await p.locator('#alert:not([hidden])').waitFor({ timeout: 30_000 });
    out.meshUserAlert = await p.locator('#alert').textContent();
    out.meshUserGridCells = await p.locator('#grid li').count();
    out.meshUserPanelVisible = await p.locator('#mesh').isVisible();
    await c.close();
  });

  await step('the admin moves a conversation from the mesh page and sees it move', async () => {
    const c = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    const p = await c.newPage();
    watch(p, 'mesh');
    await p.goto(`${config.mesh.url}/mesh`);
    await signIn(p, config.adminToken);
    const cell = p.locator(`#grid li[data-partition="${config.mesh.partition}"]`);
    await cell.waitFor({ timeout: 30_000 });
    await p.waitForFunction(() => document.querySelectorAll('#workers tr').length >= 2, null, { timeout: 30_000 });
    const colour = () => cell.evaluate((e) => getComputedStyle(e).backgroundColor);
    out.meshBefore = { owner: await cell.getAttribute('data-owner'), colour: await colour() };
    out.meshTarget = await otherAliveWorker(p, out.meshBefore.owner);
    config.mesh.target = out.meshTarget;
    await axe(p, 'mesh');
    await p.getByLabel('Conversation id').fill(config.mesh.conversation);
    await p.locator('#move-conversation-target').selectOption(config.mesh.target);
    await p.getByRole('button', { name: 'Move conversation' }).click();
    await p.waitForFunction(
      (ok) => document.querySelector('#action-result').textContent.startsWith(ok),
      'Move started',
      { timeout: 30_000 },
    );
    out.meshActionResult = await p.locator('#action-result').textContent();
    await p.waitForFunction(
      ([part, target]) => document.querySelector(`#grid li[data-partition="${part}"]`)?.dataset.owner === target,
      [config.mesh.partition, config.mesh.target],
      { timeout: LONG },
    );
    const listed = p.locator(`#moves li[data-partition="${config.mesh.partition}"][data-to="${config.mesh.target}"][data-state="done"]`).first();
    await listed.waitFor({ timeout: LONG });
    out.meshAfter = { owner: await cell.getAttribute('data-owner'), colour: await colour() };
    out.meshMoveListed = await listed.textContent();
    out.meshWorkersShown = await p.$$eval('#workers tr', (rows) => rows.map((r) => ({
      id: r.dataset.worker,
      state: r.children[1].textContent,
      spark: Boolean(r.querySelector('svg polyline')),
    })));
    out.meshGeneration = Number(await p.locator('#generation').textContent());
    await shot(p, 'mesh');
    out.meshPartitionButtonDisabledForAdmin = await p.locator('#move-partition-submit').isDisabled();
    await c.close();
  });

  await step('the operator moves a partition from the mesh page', async () => {
    const c = await browser.newContext();
    const p = await c.newPage();
    watch(p, 'mesh-operator');
    await p.goto(`${config.mesh.url}/mesh`);
    await signIn(p, config.operatorToken);
    await p.waitForFunction(() => document.querySelectorAll('#workers tr').length >= 2, null, { timeout: 30_000 });
    // a partition other than the admin's, to a worker other than its owner
    const part = (config.mesh.partition + 1) % (await p.locator('#grid li').count());
    const owner = await p.locator(`#grid li[data-partition="${part}"]`).getAttribute('data-owner');
    const target = await otherAliveWorker(p, owner);
    await p.locator('#move-partition-number').selectOption(String(part));
    await p.locator('#move-partition-target').selectOption(target);
    await p.getByRole('button', { name: 'Move partition' }).click();
    await p.waitForFunction(
      ([part, target]) => document.querySelector(`#grid li[data-partition="${part}"]`)?.dataset.owner === target,
      [part, target],
      { timeout: LONG },
    );
    out.operatorMove = { partition: part, from: owner, to: target,
      owner: await p.locator(`#grid li[data-partition="${part}"]`).getAttribute('data-owner') };
    await c.close();
  });
  out.ok = true;
} catch (err) {
  out.ok = false;
  out.error = String(err && err.stack || err);
  for (const ctx of browser.contexts()) {
    for (const p of ctx.pages()) {
      out.failureMetrics = await p.evaluate(() => window.meshchatMetrics).catch(() => null);
    }
  }
  log('failed:', out.error);
} finally {
  for (const ctx of browser.contexts()) {
    for (const p of ctx.pages()) await p.screenshot({ path: join(config.artifacts, `failure-${Date.now()}.png`) }).catch(() => {});
  }
  await browser.close();
  writeFileSync(config.out, JSON.stringify(out, null, 2));
}
