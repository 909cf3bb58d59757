// What the demo page says, in one place: labels for writers, connection states,
// token problems and billing errors. Plain words; never a raw error text from Stripe.

const SOURCES = {
  stripe_webhook: "Stripe webhook",
  upgrade_api: "Upgrade API",
  checkout: "Stripe Checkout",
  cancel: "Cancel",
  resume: "Resume",
  reconcile: "Reconcile",
  demo: "Demo seed",
  demo_seed: "Demo seed",
  sql: "SQL",
};

/** "Stripe webhook", "SQL", "App: signup"; null when the version has no writer (v0). */
export function sourceLabel(source) {
  if (!source) return null;
  if (source.startsWith("app:")) return `App: ${source.slice(4) || "unnamed"}`;
  return SOURCES[source] ?? source;
}

/** "2 s ago", "5 min ago", "3 h ago", else a date. */
export function ago(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return null;
  const s = Math.max(0, Math.round((now - t) / 1000)); // a server clock ahead reads "0 s ago"
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(t).toLocaleString();
}

/** "Changed 2 s ago by Stripe webhook" (parts that are unknown are left out). The
 * version itself is the top bar's badge: said once, not on every line. */
export function provenance(snap, now = Date.now()) {
  if (snap.version === null) return "";
  if (snap.version === 0) return "No changes yet";
  const when = snap.committed_at && ago(snap.committed_at, now);
  const who = sourceLabel(snap.source);
  return ["Changed", when, who && `by ${who}`].filter(Boolean).join(" ");
}

/** What the product calls a limit or usage metric: the plan's own label (GET /v1/config,
 * from plans.limit_labels); a key without one is shown as it is. */
export function limitLabel(key, labels) {
  const label = labels && typeof labels[key] === "string" ? labels[key].trim() : "";
  return label || key;
}

// A server that has not answered for this long is no longer "restarting": the page says
// it cannot reach it, and since when.
export const UNREACHABLE_AFTER_MS = 15_000;

export const STATUS_LABEL = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  unauthorized: "Not signed in",
  forbidden: "Not allowed",
  too_many: "Too many tabs",
  closed: "Closed",
};

function retryIn(snap, now) {
  if (!snap.retry_at) return "";
  const s = Math.max(0, Math.ceil((snap.retry_at - now) / 1000));
  return s > 0 ? ` Next try in ${s} s.` : " Trying now…";
}

function clock(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** True once a dropped connection has failed for UNREACHABLE_AFTER_MS (network or
 * restart; not a token or a server's refusal, which say their own reason). */
export function unreachable(snap, downSince, now = Date.now()) {
  if (snap.status !== "reconnecting" || downSince === null) return false;
  const e = snap.error;
  const network = !e || e.origin === "network" || e.code === "server_restarting";
  return network && now - downSince >= UNREACHABLE_AFTER_MS;
}

/** The top bar's word for the connection. */
export function statusLabel(snap, downSince, now = Date.now()) {
  if (unreachable(snap, downSince, now)) return "Not connected";
  return STATUS_LABEL[snap.status] ?? snap.status;
}

function lasted(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h`;
}

/** The page's one banner while it is not live, in plain words ("" when there is
 * nothing to say): why, since when, what the page still shows, and when it retries. */
export function bannerText(snap, downSince, now = Date.now()) {
  const e = snap.error;
  const shown = snap.version === null ? "" : ` Showing what was last received${
    snap.committed_at ? ` (changed ${ago(snap.committed_at, now)})` : ""}; it may have changed since.`;
  switch (snap.status) {
    case "live":
    case "closed":
    case "unauthorized": // the token screen says it, with the place to paste a new one
      return "";
    case "connecting":
      return shown ? `Connecting to the server…${shown}` : "";
    case "offline":
      return `This browser is offline.${shown} The page reconnects when the network is back.`;
    case "reconnecting":
      if (unreachable(snap, downSince, now)) {
        const since = new Date(downSince).toLocaleTimeString();
        return `Cannot reach the server since ${since} (${lasted(now - downSince)}).${shown} Still trying.${retryIn(snap, now)}`;
      }
      if (e?.code === "server_restarting") return `The server is restarting.${shown}${retryIn(snap, now)}`;
      if (e?.origin === "server") return `The server closed the connection: ${e.message}.${shown}${retryIn(snap, now)}`;
      if (e?.origin === "client") return `${tokenText(e)}${retryIn(snap, now)}`;
      if (e?.code === "connection_lost") return `The connection to the server was lost.${shown}${retryIn(snap, now)}`;
      return `The server does not answer.${shown}${retryIn(snap, now)}`;
    case "forbidden":
      return `This token may not follow this user (the server said: ${e?.message ?? "not allowed"}).`;
    case "too_many":
      return `Too many connections are open for this user.${shown} Trying again in about a minute.`;
    default:
      return e?.message ?? "";
  }
}

/** Token problems, saying who decided: this browser, or the server. */
export function tokenText(e) {
  if (!e) return "The token was not accepted.";
  if (e.origin === "client") {
    if (e.code === "token_expired") return `This token expired at ${clock(e.expired_at)} (by this browser's clock), so it was not sent. Paste a new one.`;
    if (e.code === "token_malformed") return "This is not a usable token (this browser could not read a user from it). Paste the whole token.";
    if (e.code === "token_unavailable") return "This page could not get a token to connect with.";
    if (e.code === "user_changed") return "The token now belongs to another user; reload the page.";
    return `This browser did not send the token: ${e.message}.`;
  }
  if (e.code === "token_expired") return "The server says this token has expired. Paste a new one.";
  return `The server refused this token: ${e.message}. Paste a new one.`;
}

const ACTIONS = { upgrade: "Plan change", checkout: "Checkout", portal: "Billing portal", cancel: "Cancellation", resume: "Resuming" };

/** A failed billing call, in statebus's words: the server's JSON message, never Stripe's text. */
export function billingError(action, status, body) {
  const what = ACTIONS[action] ?? action;
  if (body && typeof body.message === "string" && typeof body.error === "string") {
    // 502 stripe_failed: the database was left as it was (the server promises it).
    if (body.error === "stripe_failed") return `${what} failed: Stripe did not accept it, so nothing changed (${body.message}).`;
    return `${what} failed: ${body.message}`;
  }
  return `${what} failed: the server answered ${status}.`;
}

export function networkError(action) {
  return `${ACTIONS[action] ?? action} failed: the server could not be reached. If the change went through, it will show up here.`;
}
