// The session and the calls both pages make: the token is kept for this tab only
// (sessionStorage), and a call whose worker is gone goes on at another worker of the mesh.

const TOKEN_KEY = 'meshchat.token';
const BASE_KEY = 'meshchat.base';
const CALL_TIMEOUT_MS = 35000;

/** An answer the API refused: status, its JSON body and the wait it asked for. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.retryAfter = Number(this.body.retryAfterSeconds || 0);
  }
}

/** No worker of the mesh answered. */
export class Unreachable extends Error {}

/** What a person should read for `err`. */
export function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 401) return 'You are signed out: your token was not accepted. Sign in again.';
    if (err.status === 429) return `Rate limited: wait ${err.retryAfter || 1} s before trying again.`;
    if (err.status === 403) return `Not allowed: ${err.message}`;
    return err.message;
  }
  if (err instanceof Unreachable) return 'No MeshChat worker answered. Retrying when you act again.';
  return String((err && err.message) || err);
}

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * A signed-in tab: its token, who it is, and the mesh's workers in the order they are tried
 * (the one in use first). Under `make run` each worker is its own origin; on Kubernetes the
 * page's origin is the Service, which already reaches a live pod.
 */
export class Session {
  constructor(token, who) {
    this.token = token;
    this.who = who;
    const saved = sessionStorage.getItem(BASE_KEY);
    this.bases = [saved || location.origin];
    if (!this.bases.includes(location.origin)) this.bases.push(location.origin);
    this.onBase = () => {};
    this.onAnswer = () => {};
  }

  /** The session this tab kept, if any (not yet checked). */
  static saved() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** Checks `token` (a ticket request says who it stands for) and keeps it for this tab. */
  static async signIn(token) {
    if (!/^[\x21-\x7e]+$/.test(token)) {
      throw new ApiError(400, { message: 'A token is one line of visible characters, without spaces.' });
    }
    const probe = new Session(token, null);
    const who = await probe.post('/api/auth/ticket');
    probe.who = { tenant: who.tenant, user: who.user, role: who.role };
    sessionStorage.setItem(TOKEN_KEY, token);
    await probe.refreshEndpoints().catch(() => {});
    return probe;
  }

  signOut() {
    Session.forget();
  }

  /** Forgets the tab's token (and the worker it used). */
  static forget() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(BASE_KEY);
  }

  get base() {
    return this.bases[0];
  }

  /**
   * Learns the mesh's workers (their public URLs) from the worker in use — when the page came
   * from one of them (`make run`, clients reaching workers directly). Behind a Service or a
   * proxy, the page's own origin already reaches a live worker, and pods' addresses would not
   * be reachable from the browser: then only the page's origin is used.
   */
  async refreshEndpoints() {
    const r = await this.get('/api/endpoints');
    const urls = r.endpoints
      .map((e) => String(e.url).replace(/\/+$/, ''))
      // the token goes only where the page's own scheme goes (never from https to http)
      .filter((u) => u.startsWith(`${location.protocol}//`));
    if (!urls.includes(location.origin)) return;
    const next = [...new Set([this.base, ...urls])];
    if (!sameList(next, this.bases)) this.bases = next;
  }

  /** Moves on from `failed`, the worker that just failed, unless another call already did. */
  rotateFrom(failed) {
    if (this.bases.length > 1 && this.bases[0] === failed) {
      this.bases.push(this.bases.shift());
      sessionStorage.setItem(BASE_KEY, this.base);
      this.onBase(this.base);
    }
  }

  get(path) {
    return this.call('GET', path);
  }

  post(path, body, headers) {
    return this.call('POST', path, body, headers);
  }

  /** A POST that must not be repeated elsewhere if its answer is lost (cancel, migrate). */
  postOnce(path, body) {
    return this.call('POST', path, body, {}, false);
  }

  /**
   * One API call, at the worker in use or, when it cannot be reached (or is unavailable), at
   * the others in turn. Retried calls are retry-safe: reads, and sends carrying an
   * Idempotency-Key, so a send retried elsewhere is stored once.
   */
  async call(method, path, body, headers = {}, retry = true) {
    let last = new Unreachable('no worker answered');
    const tries = retry ? this.bases.length : 1;
    for (let attempt = 0; attempt < tries; attempt++) {
      const base = this.base;
      let resp;
      try {
        resp = await fetch(base + path, {
          method,
          headers: {
            Authorization: `Bearer ${this.token}`,
            ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
            ...headers,
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          // a worker whose host vanished never answers: longer than the API's 30 s limit
          signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
        });
      } catch (e) {
        last = new Unreachable(`${base} did not answer`);
        this.rotateFrom(base);
        continue;
      }
      this.onAnswer(method, base + path, resp.status);
      const text = await resp.text();
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch (e) {
        json = { message: text };
      }
      if (resp.ok) return json;
      const err = new ApiError(resp.status, json);
      if (resp.status === 503 && !err.retryAfter && attempt + 1 < tries) {
        last = err;
        this.rotateFrom(base);
        continue;
      }
      throw err;
    }
    throw last;
  }

  /** A ticket for a live stream, from the worker in use (any worker accepts it). */
  async ticket() {
    const r = await this.post('/api/auth/ticket');
    return { ticket: r.ticket, base: this.base };
  }
}

/** A random id (conversation ids, idempotency keys). */
export function randomId(prefix) {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  const b64 = btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_');
  return `${prefix}${b64}`;
}
