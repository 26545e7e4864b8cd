// What the browser tests share: Debian's Chromium as the machine notes say it runs here, and
// the steps a person takes on the chat page.

import { chromium } from 'playwright-core';

const LONG = 90_000;

/** Headless Chromium from Debian (/usr/bin/chromium), a fresh profile per launch. */
export function launch(executablePath = '/usr/bin/chromium') {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
  });
}

export async function signIn(page, token) {
  await page.getByLabel('Access token').fill(token);
  // by keyboard, as a person would after pasting
  await page.getByLabel('Access token').press('Enter');
}

/** The assistant messages' texts, and which are still streaming, stopped or errors. */
export async function assistant(page) {
  return page.$$eval('#messages li.assistant', (lis) => lis.map((li) => ({
    id: li.dataset.id,
    text: li.querySelector('.text').textContent,
    status: li.querySelector('.status').textContent,
    streaming: li.classList.contains('streaming'),
    stopped: li.classList.contains('stopped'),
    error: li.classList.contains('error'),
  })));
}

export async function sendMessage(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

/** Waits for the `n`th assistant message (1-based) to be done, returns all of them. */
export async function waitReplies(page, n, timeout = LONG) {
  await page.waitForFunction(
    (n) => {
      const lis = [...document.querySelectorAll('#messages li.assistant')];
      return lis.length >= n && !lis[n - 1].classList.contains('streaming');
    },
    n,
    { timeout },
  );
  return assistant(page);
}

/** Waits until the `n`th assistant message streams with some text. */
export async function waitStreaming(page, n, minChars = 1) {
  await page.waitForFunction(
    ([n, minChars]) => {
      const li = document.querySelectorAll('#messages li.assistant')[n - 1];
      return li && li.classList.contains('streaming') && li.querySelector('.text').textContent.length >= minChars;
    },
    [n, minChars],
    { timeout: LONG },
  );
}

