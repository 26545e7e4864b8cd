// Sign-in and sign-out, shared by both pages: the header, the form and the alert.

import { ApiError, Session, describe } from './api.js';
import { show } from './dom.js';

const $ = (id) => document.getElementById(id);

/** Shows `text` in the page's alert (none: hides it). */
export function alertText(text) {
  $('alert').textContent = text || '';
  show($('alert'), Boolean(text));
}

/**
 * Wires the sign-in form and the sign-out button. `onSignedIn(session)` shows the page's
 * content; `onSignedOut()` stops what the page runs. Returns `signedOut(message)`.
 */
export function setUpSignIn({ content, onSignedIn, onSignedOut }) {
  let session = null;
  let endpointsTimer = null;

  function showForm(message) {
    show($('sign-in'), true);
    show(content, false);
    show($('who'), false);
    show($('sign-out'), false);
    show($('mesh-link'), false);
    $('connection').textContent = '';
    alertText(message);
    $('token').focus();
  }

  function signedOut(message) {
    clearInterval(endpointsTimer);
    onSignedOut();
    Session.forget();
    session = null;
    showForm(message);
  }

  async function signIn(token) {
    session = await Session.signIn(token);
    const { tenant, user, role } = session.who;
    $('who').textContent = `${user} · ${tenant} (${role})`;
    show($('who'), true);
    show($('sign-out'), true);
    show($('mesh-link'), role === 'admin' || role === 'operator');
    show($('sign-in'), false);
    show(content, true);
    alertText('');
    $('token').value = '';
    clearInterval(endpointsTimer);
    endpointsTimer = setInterval(() => session && session.refreshEndpoints().catch(() => {}), 30000);
    await onSignedIn(session);
  }

  $('sign-in-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    try {
      await signIn(token);
    } catch (err) {
      session = null;
      showForm(err instanceof ApiError && err.status === 401 ? 'That token was not accepted.' : describe(err));
    }
  });
  $('sign-out').addEventListener('click', () => signedOut('Signed out.'));

  const saved = Session.saved();
  if (saved) {
    signIn(saved).catch((err) => signedOut(describe(err)));
  } else {
    showForm();
  }
  return signedOut;
}

/** Shows `err` plainly; a refused token signs the tab out. */
export function failWith(signedOut) {
  return (err) => {
    if (err instanceof ApiError && err.status === 401) return signedOut(describe(err));
    alertText(describe(err));
  };
}
