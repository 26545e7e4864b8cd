// The README's promise under `make run`: open the chat page it printed, sign in with the user
// key it printed, chat; open the mesh page it printed as the admin. Prints what it saw as JSON.
//
//   node smoke.mjs <chat page URL> <mesh page URL> <user token> <admin token>

import { launch, sendMessage, signIn, waitReplies } from './browser.mjs';

const [chatUrl, meshUrl, userToken, adminToken] = process.argv.slice(2);
const out = {};
const browser = await launch();
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(chatUrl);
  await signIn(page, userToken);
  await page.locator('#app:not([hidden])').waitFor();
  out.who = await page.locator('#who').textContent();
  await page.getByRole('button', { name: 'New conversation' }).click();
  await page.locator('#connection[data-state="live"]').waitFor({ timeout: 60_000 });
  await sendMessage(page, 'Hello from the README');
  out.reply = (await waitReplies(page, 1))[0];

  const mesh = await (await browser.newContext()).newPage();
  await mesh.goto(meshUrl);
  await signIn(mesh, adminToken);
  await mesh.waitForFunction(() => document.querySelectorAll('#grid li[data-owner^="node-"]').length > 0, null, { timeout: 60_000 });
  out.meshCells = await mesh.locator('#grid li').count();
  out.meshWorkers = await mesh.locator('#workers tr').count();
  out.ok = true;
} catch (err) {
  out.ok = false;
  out.error = String(err && err.stack || err);
} finally {
  await browser.close();
  console.log(JSON.stringify(out));
}
