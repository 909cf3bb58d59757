// statebus.js: the browser client for statebus (docs/protocol.md; types in /statebus.d.ts).
//
//   import { connect } from "/statebus.js";
//   const store = connect({ url: "/v1/ws", getToken: async () => token });
//   store.subscribe(() => render(store.getSnapshot()));
//   // React: useSyncExternalStore(store.subscribe, store.getSnapshot)
//
// One ES module, no dependencies, no build step. The design in one paragraph:
// tabs of one browser elect a leader with Web Locks; only the leader holds a
// WebSocket, and it relays every snapshot and status change to the other tabs
// over a BroadcastChannel. Every tab keeps the last snapshot in localStorage so a
// new tab paints at once. The server numbers snapshots per user and `since`
// lets a reconnecting socket resume, so reconnects can be blunt and still lose
// nothing: the version check below is the only thing that keeps order.

// Retry delays: the formula of statebus/backoff.py (exponential, bounded, full jitter),
// with a wider window than the server's own loops because browsers come in thousands.
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 10_000;
const EXPIRED_SKEW_S = 60; // a token this far past `exp` by our clock is not worth sending
const MAX_AUTH_FAILURES = 3; // 4401s in a row (each with a fresh getToken()) before "unauthorized"
const LIVE_TIMEOUT_MS = 15_000; // socket must answer auth by then (server allows 10 s for auth)
const TOO_MANY_RETRY_MS = [30_000, 60_000]; // 4429: come back much later, never hammer
// The heartbeat (statebus/client.py uses the same figures): after this long without a
// frame the socket pings, and a server that has not answered PONG_WITHIN_MS later is
// gone, whatever TCP says. Browsers never show WebSocket-level pings to the page, so
// without this a silent network (Wi-Fi switch, laptop waking) would look "live" forever.
const PING_AFTER_MS = 7_000;
const PONG_WITHIN_MS = 5_000;
const PING = JSON.stringify({ type: "ping" });

/** Decode a JWT's payload without verifying it: we only need `sub`, `iat`, `exp`. */
export function decodeJwt(token) {
  try {
    const part = String(token).split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** Milliseconds before retry number `attempt` (1 for the first): uniform in
 * [0, min(cap, base * 2 ** (attempt - 1))], exactly statebus/backoff.py's delay(). */
export function backoffDelayMs(attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS) {
  if (attempt < 1) return 0;
  return Math.random() * Math.min(cap, base * 2 ** Math.min(attempt - 1, 62));
}

/** Relative URLs ("/v1/ws") resolve against the page; http(s) becomes ws(s). */
function toWsUrl(url) {
  const base = globalThis.location?.href;
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

/** When to fetch a fresh token: 30 s before `exp`, or at 80% of a short lifetime. */
function refreshDelayMs(claims) {
  if (!claims || typeof claims.exp !== "number") return null;
  const now = Date.now() / 1000;
  const life = typeof claims.iat === "number" ? claims.exp - claims.iat : claims.exp - now;
  let left = claims.exp - now;
  // A token that looks already (nearly) expired usually means the local clock is
  // off, not that the server will reject it; fall back to its own lifetime so a
  // skewed clock cannot make us reconnect in a tight loop. 4401 is the backstop.
  if (left <= 5) left = life;
  if (!(life > 0) || !(left > 0)) return null;
  const ms = (left - Math.min(30, life * 0.2)) * 1000;
  return Math.min(Math.max(ms, 5_000), 2 ** 31 - 1);
}

export function connect(options) {
  const {
    url,
    getToken,
    userId: followUserId = null, // admins: follow this user instead of the token's `sub`
    WebSocketImpl = globalThis.WebSocket,
  } = options || {};
  if (!url || typeof getToken !== "function") throw new TypeError("connect({url, getToken}) needs both");
  const wsUrl = toWsUrl(url);

  const listeners = new Set();
  const debug = { socketsOpened: 0, messages: 0, reconnects: 0, tokenRefreshes: 0, peerMessages: 0, pings: 0 };
  // The snapshot is replaced, never mutated, and only when a field really
  // changes: useSyncExternalStore compares by identity and would loop otherwise.
  // `error` says why the status is not "live" and who decided: {code, message, origin}
  // with origin "client" (this browser refused a token before sending it), "server"
  // (the server's error frame or close code) or "network" (no answer at all).
  let snap = Object.freeze({
    status: "connecting", user_id: null, version: null, committed_at: null, source: null,
    state: null, error: null, leader: false, retry_at: null,
  });

  let closed = false;
  let key = null; // the user whose state this store shows: userId option, else token `sub`
  let storageKey = options?.storageKey || null;
  let channel = null;
  let lockMode = false; // true when Web Locks decide who holds the socket
  let leader = false;
  let releaseLock = null;
  let lockAbort = null;
  let ws = null;
  let pendingToken = null; // token already fetched and not yet sent (saves a getToken() call)
  let attempt = 0; // failed connection attempts in a row: drives the backoff
  let authFailures = 0;
  let retryTimer = null;
  let refreshTimer = null;
  let heartbeatTimer = null; // the live socket's next ping, or its deadline for an answer

  function set(patch) {
    if (!Object.keys(patch).some((k) => !Object.is(snap[k], patch[k]))) return;
    snap = Object.freeze({ ...snap, ...patch });
    for (const fn of [...listeners]) {
      try { fn(); } catch (e) { console.error("statebus listener failed", e); }
    }
  }

  // --- snapshots: one gate for the socket, the cache and the other tabs ----------

  // Returns the fields to merge, or null when the message must be ignored: it is
  // for another user, or not newer than what we hold (a tab, the cache and a
  // socket may all deliver the same version; the first one wins).
  function admit(m, authoritative = false) {
    if (!m || m.user_id !== key || !Number.isInteger(m.version)) return null;
    if (snap.version !== null && m.version <= snap.version) {
      // The first answer to auth is the server's latest. If it is *older* than
      // what we hold, our copy came from a database that was since reset (dev
      // machines): the server is the truth, so take it rather than freeze forever.
      if (!(authoritative && m.version < snap.version)) return null;
      console.warn(`statebus: server is at version ${m.version}, below our ${snap.version}; database reset?`);
    }
    return {
      user_id: m.user_id, version: m.version, state: m.state ?? null,
      committed_at: m.committed_at ?? null, source: m.source ?? null,
    };
  }

  function loadCache() {
    try {
      const m = JSON.parse(localStorage.getItem(storageKey));
      return m && m.user_id === key ? m : null;
    } catch { return null; } // private mode, quota, corrupt JSON: just start empty
  }

  function saveCache() {
    try {
      localStorage.setItem(storageKey, JSON.stringify(envelopeOf(snap)));
    } catch { /* private mode or a state over quota: the cache is only an optimisation */ }
  }

  function envelopeOf(s) {
    return { user_id: s.user_id, version: s.version, committed_at: s.committed_at, source: s.source, state: s.state };
  }

  // --- tabs ----------------------------------------------------------------------

  function post(msg) {
    try { channel?.postMessage(msg); } catch { /* channel closed under us */ }
  }
  const postSnap = () => post({ t: "snap", ...envelopeOf(snap) });
  const postStatus = () =>
    lockMode && leader && post({ t: "status", status: snap.status, error: snap.error, retry_at: snap.retry_at });

  function onChannel(ev) {
    const m = ev.data;
    if (closed || !m || typeof m !== "object") return;
    debug.peerMessages++;
    if (m.t === "hello") {
      // A tab just started: give it what we have so it need not wait for a change.
      if (leader) {
        if (snap.version !== null) postSnap();
        postStatus();
      }
    } else if (m.t === "snap") {
      const patch = admit(m);
      if (patch) set(patch);
    } else if (m.t === "status" && lockMode && !leader) {
      // Followers have no socket of their own, so the leader's status is theirs.
      // Without locks every tab has its own socket and keeps its own status.
      set({ status: m.status, error: m.error ?? null, retry_at: m.retry_at ?? null });
    }
  }

  function becomeLeader() {
    if (closed) return;
    leader = true;
    // Taking over from a tab that just closed: its socket is gone, ours is not yet up.
    set({ leader: true, status: snap.status === "connecting" ? "connecting" : "reconnecting" });
    globalThis.addEventListener?.("online", onOnline);
    openSocket();
  }

  function onOnline() {
    // The network is back: don't sit out the rest of a backoff delay.
    if (retryTimer && (snap.status === "reconnecting" || snap.status === "offline")) {
      clearTimeout(retryTimer);
      retryTimer = null;
      openSocket();
    }
  }

  // --- the socket (leader only) --------------------------------------------------

  function setStatus(status, error = snap.error, retry_at = null) {
    set({ status, error, retry_at });
    postStatus();
  }

  function scheduleRetry(ms, error) {
    clearTimeout(retryTimer);
    debug.reconnects++;
    const offline = globalThis.navigator?.onLine === false;
    const at = Date.now() + ms;
    setStatus(offline ? "offline" : "reconnecting", offline ? { code: "offline", message: "the browser is offline", origin: "network" } : error, at);
    retryTimer = setTimeout(() => { retryTimer = null; openSocket(); }, ms);
  }

  // Full jitter: after a server restart thousands of browsers reconnect at once;
  // spreading them over the whole window is what keeps the restarted server standing.
  function backoffMs() {
    attempt = Math.min(attempt + 1, 30);
    return backoffDelayMs(attempt);
  }

  async function openSocket() {
    if (closed || !leader || ws) return;
    // A token fetched at start-up may have aged while this tab was a follower.
    let token = (decodeJwt(pendingToken)?.exp ?? 0) > Date.now() / 1000 + 10 ? pendingToken : null;
    pendingToken = null;
    let getterFailed = false;
    try {
      // Ask every time: apps (Clerk, Auth0) cache tokens and refresh them as needed.
      if (!token) token = await getToken();
    } catch (e) {
      token = null;
      getterFailed = true;
      console.warn("statebus: getToken() failed", e);
    }
    if (closed || !leader || ws) return;
    // Decided here, in the browser, before anything is sent: the page must not blame
    // the server for these (their origin says so).
    if (getterFailed) {
      return authFailed({ code: "token_unavailable", message: "getToken() failed", origin: "client" });
    }
    const claims = decodeJwt(token);
    if (!claims || typeof claims.sub !== "string" || !claims.sub) {
      return authFailed({ code: "token_malformed", message: "this is not a JWT with a user (sub)", origin: "client" });
    }
    if (typeof claims.exp === "number" && claims.exp < Date.now() / 1000 - EXPIRED_SKEW_S) {
      const when = new Date(claims.exp * 1000).toISOString();
      return authFailed({ code: "token_expired", message: `the token expired at ${when}`, origin: "client", expired_at: when });
    }
    if (!followUserId && claims.sub !== key) {
      // The app signed in as someone else. This store is bound to one user (its
      // lock, channel and cache are keyed by it): close it and connect() anew.
      return setStatus("unauthorized", { code: "user_changed", message: `token is for ${claims.sub}, store for ${key}`, origin: "client" });
    }

    let sock;
    try {
      sock = new WebSocketImpl(wsUrl);
    } catch (e) {
      return scheduleRetry(backoffMs(), { code: "connect_failed", message: String(e?.message || e), origin: "client" });
    }
    ws = sock;
    debug.socketsOpened++;
    let live = false;
    let opened = false;
    let serverError = null;
    const liveTimer = setTimeout(() => !live && sock.close(), LIVE_TIMEOUT_MS);

    // Every frame from the server restarts the quiet spell; only silence costs a ping.
    const heard = () => {
      clearTimeout(heartbeatTimer);
      heartbeatTimer = setTimeout(ping, PING_AFTER_MS);
    };
    const ping = () => {
      if (ws !== sock) return;
      debug.pings++;
      try { sock.send(PING); } catch { /* closing: onclose decides */ }
      heartbeatTimer = setTimeout(lost, PONG_WITHIN_MS);
    };
    const lost = () => {
      if (ws !== sock) return;
      // The close handshake would wait on the same silent network: let the socket go
      // and retry now; the next socket resumes with `since` once packets flow.
      ws = null;
      clearTimeout(refreshTimer);
      sock.onclose = sock.onmessage = null;
      try { sock.close(); } catch { /* already closing */ }
      const message = `no answer to a ping within ${PONG_WITHIN_MS / 1000} s`;
      scheduleRetry(backoffMs(), { code: "connection_lost", message, origin: "network" });
    };

    sock.onopen = () => {
      opened = true;
      const auth = { type: "auth", token };
      if (snap.version !== null) auth.since = snap.version;
      if (followUserId) auth.user_id = followUserId;
      sock.send(JSON.stringify(auth));
    };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      debug.messages++;
      if (live) heard();
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === "snapshot" || m.type === "current") {
        const first = !live;
        const patch = m.type === "snapshot" ? admit(m, first) : null;
        if (first) {
          live = true;
          attempt = 0;
          authFailures = 0;
          clearTimeout(liveTimer);
          heard();
          scheduleRefresh(sock, claims);
        }
        if (patch) {
          set({ ...patch, status: "live", error: null, retry_at: null });
          saveCache();
          postSnap();
        } else {
          set({ status: "live", error: null, retry_at: null });
        }
        if (first) postStatus();
      } else if (m.type === "error") {
        // The close that follows says what to do; this says why, in the server's words.
        serverError = { code: String(m.code), message: String(m.message ?? ""), origin: "server" };
      }
    };
    sock.onerror = () => {}; // always followed by onclose, which decides
    sock.onclose = (ev) => {
      clearTimeout(liveTimer);
      if (ws !== sock) return;
      clearTimeout(heartbeatTimer);
      ws = null;
      clearTimeout(refreshTimer);
      if (closed) return;
      const error = closeError(ev, serverError, opened);
      switch (ev.code) {
        case 4401: // token rejected or expired: fetch a new one, but not forever
          if (++authFailures >= MAX_AUTH_FAILURES) return setStatus("unauthorized", error);
          return scheduleRetry(backoffMs(), error);
        case 4403: // retrying cannot help; stay quiet until store.reconnect()
          return setStatus("forbidden", error);
        case 4429: { // too many sockets for this user: wait long, don't join the stampede
          const [lo, hi] = TOO_MANY_RETRY_MS;
          setStatus("too_many", error);
          retryTimer = setTimeout(() => { retryTimer = null; openSocket(); }, lo + Math.random() * (hi - lo));
          return;
        }
        case 1013: // overloaded: start the backoff further along
          attempt = Math.max(attempt, 3);
          return scheduleRetry(backoffMs(), error);
        default: // 1006 network drop, 1012 restart, 4408, 4400 and the rest
          return scheduleRetry(backoffMs(), error);
      }
    };
  }

  // Why a socket closed, for people: the server's own words when it sent an error
  // frame; "server_restarting" for 1012 (and for failed attempts right after one, as
  // a restarting server refuses connections for a while); otherwise "connection_lost".
  function closeError(ev, serverError, opened) {
    if (ev.code === 1012) {
      return { code: "server_restarting", message: serverError?.message || "server restarting", origin: "server" };
    }
    if (serverError) return { ...serverError, close_code: ev.code };
    if (!opened && snap.error?.code === "server_restarting") return snap.error;
    return {
      code: opened ? "connection_lost" : "unreachable",
      message: opened ? `connection closed (${ev.code})` : "no answer from the server",
      origin: "network",
      close_code: ev.code,
    };
  }

  function authFailed(error) {
    if (++authFailures >= MAX_AUTH_FAILURES) return setStatus("unauthorized", error);
    scheduleRetry(backoffMs(), error);
  }

  // Token refresh by plain reconnect, not make-before-break: a second socket,
  // even briefly, counts against the per-user socket limit (4429), and `since`
  // already guarantees the new socket delivers anything sent in the gap of one
  // round trip. Status stays "live" through the swap; a failure of the new
  // socket goes down the ordinary retry path.
  function scheduleRefresh(sock, claims) {
    clearTimeout(refreshTimer);
    const delay = refreshDelayMs(claims);
    if (delay === null) return;
    refreshTimer = setTimeout(async () => {
      let token;
      try { token = await getToken(); } catch { return; } // 4401 at expiry will retry
      const fresh = decodeJwt(token);
      if (closed || ws !== sock) return;
      // Same token back (the app cannot refresh): reconnecting gains nothing.
      if (!fresh || !(fresh.exp > claims.exp)) return;
      debug.tokenRefreshes++;
      ws = null;
      sock.onclose = sock.onmessage = null;
      sock.close(1000, "token refresh");
      pendingToken = token;
      openSocket();
    }, delay);
  }

  // --- start ---------------------------------------------------------------------

  (async () => {
    let token;
    let failed = false;
    try {
      token = await getToken();
    } catch (e) {
      failed = true;
      console.warn("statebus: getToken() failed", e);
    }
    if (closed) return;
    const sub = decodeJwt(token)?.sub;
    key = followUserId || sub;
    if (!key) {
      const error = failed
        ? { code: "token_unavailable", message: "getToken() failed", origin: "client" }
        : { code: "token_malformed", message: "this is not a JWT with a user (sub)", origin: "client" };
      return set({ status: "unauthorized", error });
    }
    pendingToken = token;
    // Keyed by user: tabs of one origin signed in as different users must never
    // share a socket, a snapshot or a cache entry.
    storageKey ||= `statebus:snapshot:${key}`;
    const name = options?.channelName || `statebus:${key}`;

    // Paint the cached snapshot now; the status stays "connecting" until a socket answers.
    const cached = admit(loadCache());
    set({ user_id: key, ...(cached || {}) });

    if (typeof BroadcastChannel === "function") {
      try {
        channel = new BroadcastChannel(name);
        channel.onmessage = onChannel;
      } catch { channel = null; }
    }
    const locks = globalThis.navigator?.locks;
    if (channel && typeof locks?.request === "function") {
      lockMode = true;
      post({ t: "hello" });
      lockAbort = new AbortController();
      // The callback's promise holds the lock until close() or the tab goes away;
      // then the browser hands it to the next waiting tab, which opens the socket.
      locks.request(options?.lockName || name, { mode: "exclusive", signal: lockAbort.signal }, () =>
        closed ? undefined : new Promise((resolve) => { releaseLock = resolve; becomeLeader(); }),
      ).catch(() => { /* AbortError from close() */ });
    } else {
      // No Web Locks (insecure context) or no channel: every tab has its own
      // socket; with a channel, tabs still share snapshots (whoever is first wins).
      if (channel) post({ t: "hello" });
      becomeLeader();
    }
  })();

  return {
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    getSnapshot: () => snap,
    get status() { return snap.status; },
    isLeader: () => leader,
    debug,
    /** Try again now: after "unauthorized" (new sign-in), "forbidden", "too_many", or a backoff. */
    reconnect() {
      if (closed) return;
      attempt = 0;
      authFailures = 0;
      if (!leader) return post({ t: "hello" });
      clearTimeout(retryTimer);
      retryTimer = null;
      if (!ws) {
        setStatus("reconnecting", snap.error);
        openSocket();
      }
    },
    close() {
      if (closed) return;
      closed = true;
      clearTimeout(retryTimer);
      clearTimeout(refreshTimer);
      clearTimeout(heartbeatTimer);
      if (ws) {
        ws.onclose = ws.onmessage = null;
        try { ws.close(1000, "closed"); } catch { /* already closing */ }
        ws = null;
      }
      releaseLock?.();
      lockAbort?.abort();
      try { channel?.close(); } catch { /* ignore */ }
      globalThis.removeEventListener?.("online", onOnline);
      leader = false;
      set({ status: "closed", leader: false, retry_at: null });
      listeners.clear();
    },
  };
}
