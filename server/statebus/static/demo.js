// The demo page: one store, one render function, no framework.
// Everything the page shows about the user comes from store.getSnapshot(); billing
// buttons only POST, and the result arrives like any other change, over the socket.
// The page must never lie: data from a dead connection is marked stale, actions are
// off while not live, every message names the version it describes and goes away
// when a newer one is shown, and "Live" needs a token the server accepts.
import { connect, decodeJwt } from "/statebus.js";
import {
  bannerText, billingError, limitLabel, networkError, provenance, sourceLabel, statusLabel, tokenText,
} from "/demo-words.js";

const TOKEN_KEY = "statebus:demo:token";
const USER_KEY = "statebus:demo:user_id";
const KNOWN_KEYS = new Set(["plan", "subscription", "billing", "usage", "system"]);
const ENDED = new Set(["canceled", "incomplete_expired"]); // no live subscription: offer checkout
const MAX_CHANGES = 8;

const $ = (id) => document.getElementById(id);
let store = null;
let token = null;
let following = null; // admins: the user followed, when not the token's own
let lastSnap = null;
let config = null; // GET /v1/config: {stripe, stripe_webhook, plans}; null until known
let message = null; // {kind: "result"|"error", text, version, clearOnLive}
let inFlight = null; // the action being sent
const changes = []; // versions this tab has shown: {version, source, committed_at}
// The server's word on this tab's own token: "pending", "ok", "retry" (no answer yet)
// or "refused". Tabs of one browser share one socket, so a tab whose token the server
// would refuse still receives the leader tab's snapshots: it must not call that "Live".
let tokenCheck = "pending";
let expiryTimer = null;
let downSince = null; // when the page stopped being live (or started without being live)
const pageStarted = Date.now();

// --- token: from #token=... once, then sessionStorage (per tab, gone with the tab) ---

function takeTokenFromUrl() {
  const params = new URLSearchParams(location.hash.slice(1));
  const found = [params.get("token"), params.get("user_id")];
  if (!found[0]) return found;
  // Keep the token out of the address bar, history and anything copied from it.
  history.replaceState(null, "", location.pathname + location.search);
  try {
    sessionStorage.setItem(TOKEN_KEY, found[0]);
    if (found[1]) sessionStorage.setItem(USER_KEY, found[1]);
    else sessionStorage.removeItem(USER_KEY);
  } catch { /* private mode: this tab keeps it in memory only */ }
  return found;
}

const TOKEN_HINT = $("token-hint").innerHTML;

function showTokenBox(hint) {
  $("token-box").hidden = false;
  $("token-heading").textContent = hint ? "This token was not accepted" : "Open the demo with a token";
  if (hint) $("token-hint").textContent = hint;
  else $("token-hint").innerHTML = TOKEN_HINT;
}

/** The refused-token screen: the reason and the place to paste another token, and
 * nothing that belongs to a working session (data, version, expiry date). */
function showRefused(error) {
  document.body.dataset.status = "unauthorized";
  $("status").dataset.status = "unauthorized";
  text("status", statusLabel({ status: "unauthorized" }, null));
  $("app").hidden = true;
  $("version-badge").hidden = true;
  showTokenBox(tokenText(error));
}

// GET /v1/state with this tab's token: 401/403 means the server refuses it.
async function checkToken(checked, userId) {
  const url = userId ? `/v1/state?user_id=${encodeURIComponent(userId)}` : "/v1/state";
  let res;
  try {
    res = await fetch(url, { headers: { Authorization: `Bearer ${checked}` }, cache: "no-store" });
  } catch {
    res = null; // no answer: asked again once the connection is back
  }
  if (checked !== token || !store) return; // another token (or none) since
  if (res && (res.status === 401 || res.status === 403)) {
    const body = await res.json().catch(() => null);
    tokenCheck = "refused";
    const error = { code: String(body?.error ?? "invalid_token"), message: String(body?.message ?? `HTTP ${res.status}`), origin: "server" };
    store.close(); // leaves the tabs' group: this token must never hold their socket
    showRefused(error);
    return;
  }
  tokenCheck = res && (res.ok || res.status === 304) ? "ok" : "retry";
  if (tokenCheck === "ok") recheckAtExpiry(checked, userId);
  render(store.getSnapshot());
}

function recheckAtExpiry(checked, userId) {
  clearTimeout(expiryTimer);
  const exp = decodeJwt(checked)?.exp;
  if (typeof exp !== "number") return;
  const ms = Math.min(Math.max(exp * 1000 - Date.now() + 1000, 1000), 2 ** 31 - 1);
  expiryTimer = setTimeout(() => checkToken(checked, userId), ms);
}

function start(pasted = null) {
  let userId = null;
  token = pasted;
  if (!token) [token, userId] = takeTokenFromUrl();
  if (!token) {
    try {
      token = sessionStorage.getItem(TOKEN_KEY);
      userId = sessionStorage.getItem(USER_KEY);
    } catch { /* sessionStorage unavailable (private mode): fall back to pasting */ }
  }
  if (!token) return showTokenBox();

  store?.close();
  message = null;
  changes.length = 0;
  tokenCheck = "pending";
  downSince = null;
  $("token-box").hidden = true;
  $("app").hidden = false;
  $("indicators").hidden = false;
  const sub = decodeJwt(token)?.sub ?? null;
  following = userId && userId !== sub ? userId : null;
  $("admin-banner").hidden = !following;
  $("admin-banner").textContent = following
    ? `Following user ${following} as admin (signed in as ${sub ?? "unknown"}). Billing actions are off: they would act on your own account, not on this user's.`
    : "";
  store = connect({ url: "/v1/ws", getToken: async () => token, userId: userId || undefined });
  window.statebusStore = store;
  const current = store;
  current.subscribe(() => store === current && render(current.getSnapshot()));
  render(store.getSnapshot());
  // A token this browser refuses by itself (no user, long expired: statebus.js's own
  // checks) is not sent anywhere; the store says so, in the browser's name.
  const claims = decodeJwt(token);
  if (claims?.sub && !(typeof claims.exp === "number" && claims.exp < Date.now() / 1000 - 60)) {
    checkToken(token, userId);
  }

  if (!config) {
    configAsked = false;
    loadConfig();
  }
}

let configAsked = false;

async function loadConfig() {
  if (configAsked) return;
  configAsked = true;
  try {
    const res = await fetch("/v1/config", { cache: "no-store" });
    if (res.ok) config = await res.json();
  } catch { /* server down: asked again when the connection comes back */ }
  if (store && tokenCheck !== "refused") render(store.getSnapshot());
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
  if (!value) return;
  try {
    sessionStorage.setItem(TOKEN_KEY, value);
    sessionStorage.removeItem(USER_KEY);
  } catch { /* private mode: keep it in memory only */ }
  $("token-input").value = "";
  start(value);
});

$("forget").addEventListener("click", () => {
  try { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(USER_KEY); } catch { /* ignore */ }
  clearTimeout(expiryTimer);
  token = null;
  store?.close();
  store = null;
  window.statebusStore = null;
  $("app").hidden = true;
  $("indicators").hidden = true;
  showTokenBox();
});

// --- rendering --------------------------------------------------------------------

function text(id, value) {
  const el = $(id);
  const s = value === null || value === undefined || value === "" ? "–" : String(value);
  if (el.textContent !== s) el.textContent = s;
}

function fmtNumber(n) {
  return typeof n === "number" ? n.toLocaleString() : n === null ? "Unlimited" : JSON.stringify(n);
}

function fmtDay(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

function fmtDate(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const days = Math.round((d - Date.now()) / 86_400_000);
  const rel = days === 0 ? "today" : days > 0 ? `in ${days} day${days === 1 ? "" : "s"}` : `${-days} day${days === -1 ? "" : "s"} ago`;
  return `${fmtDay(iso)} (${rel})`;
}

/** When the subscription stops renewing, or null: cancel_at wins, else period end. */
function endsOn(sub) {
  if (sub?.cancel_at) return sub.cancel_at;
  if (sub?.cancel_at_period_end) return sub.current_period_end || "period end";
  return null;
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(
    ...(rows.length ? rows : [[{ text: "none", cls: "muted" }, ""]]).map((cells) => {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        if (cell instanceof Node) td.append(cell);
        else if (cell && typeof cell === "object") { td.textContent = cell.text; td.className = cell.cls || ""; }
        else td.textContent = cell;
        tr.append(td);
      }
      tr.lastChild.classList.add("num");
      return tr;
    }),
  );
}

function usageCell(used, limit) {
  const wrap = document.createElement("div");
  wrap.className = "usage";
  const label = document.createElement("span");
  label.textContent = `${fmtNumber(used)} / ${typeof limit === "number" ? fmtNumber(limit) : "∞"}`;
  wrap.append(label);
  if (typeof limit === "number" && limit > 0 && typeof used === "number") {
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    const pct = Math.min(100, (used / limit) * 100);
    fill.style.width = `${pct}%`;
    if (pct >= 100) fill.className = "over";
    else if (pct >= 80) fill.className = "near";
    bar.append(fill);
    wrap.append(bar);
  }
  return wrap;
}

function render(storeSnap) {
  if (tokenCheck === "refused") return; // the refused-token screen stays as it is
  if (storeSnap.status === "unauthorized") return showRefused(storeSnap.error);
  // Live over a shared socket is only "Live" for this tab once its token is accepted.
  const snap = storeSnap.status === "live" && tokenCheck !== "ok" ? { ...storeSnap, status: "connecting" } : storeSnap;
  const previous = lastSnap;
  lastSnap = snap;
  const live = snap.status === "live";
  if (live) downSince = null;
  else if (downSince === null) downSince = previous?.status === "live" ? Date.now() : pageStarted;
  document.body.dataset.status = snap.status;
  $("status").dataset.status = snap.status;
  $("app").hidden = false;
  $("token-box").hidden = true;
  $("role-line").hidden = !live;
  text("role", snap.leader ? "leader" : "follower");
  $("version-badge").hidden = snap.version === null;
  text("version", snap.version);
  text("user-id", snap.user_id);
  const exp = decodeJwt(token)?.exp;
  const accepted = tokenCheck === "ok" && typeof exp === "number";
  $("token-exp").textContent = accepted ? `Signed in with a token valid until ${new Date(exp * 1000).toLocaleString()}` : "";

  // A message about an older version, or a network failure the reconnect has made
  // moot, is no longer true of what the page shows: drop it.
  if (message && snap.version !== null && message.version < snap.version) message = null;
  if (message?.clearOnLive && live && previous && previous.status !== "live") message = null;
  if (snap.version !== null && snap.version !== changes[0]?.version) {
    changes.unshift({ version: snap.version, source: snap.source, committed_at: snap.committed_at });
    changes.length = Math.min(changes.length, MAX_CHANGES);
  }
  if (storeSnap.status === "live" && tokenCheck === "retry") {
    tokenCheck = "pending"; // the server answers again: ask it about our token now
    checkToken(token, following);
  }
  if (live && previous?.status !== "live") {
    // Connected (again): the server answers now, and a restarted server may have
    // another configuration (Stripe set up since, say).
    configAsked = false;
    loadConfig();
  }

  renderTimes(snap);

  const state = snap.state;
  const known = snap.version !== null; // null: nothing cached and no answer yet
  $("empty").hidden = !(known && state === null);
  $("plan-card").hidden = !(state && typeof state === "object");
  $("plan-card").classList.toggle("stale", known && !live);
  renderChanges();
  if (state && typeof state === "object") renderState(state);
  else $("other").hidden = true;
  renderActions(snap);
}

/** The parts that depend on the clock: ticked every second. */
function renderTimes(snap) {
  const now = Date.now();
  text("status", statusLabel(snap, downSince, now));
  text("provenance", provenance(snap, now));
  const banner = bannerText(snap, downSince, now);
  $("conn-error").hidden = !banner;
  if ($("conn-error").textContent !== banner) $("conn-error").textContent = banner;
}

function renderChanges() {
  $("changes-card").hidden = changes.length === 0;
  $("changes").replaceChildren(...changes.map((c) => {
    const li = document.createElement("li");
    li.dataset.version = c.version;
    const when = c.committed_at ? new Date(c.committed_at).toLocaleTimeString() : null;
    li.textContent = [`v${c.version}`, sourceLabel(c.source) ?? (c.version === 0 ? "no changes yet" : null), when]
      .filter(Boolean).join(" · ");
    return li;
  }));
}

function renderState(state) {
  const plan = state.plan || {};
  const sub = state.subscription || {};
  text("plan-name", plan.name ?? plan.code);
  text("plan-code", plan.code);
  text("sub-status", sub.status || "none");
  $("sub-status").dataset.value = sub.status || "none";
  text("period-end", fmtDate(sub.current_period_end));
  $("period-end").title = sub.current_period_end || "";
  const ends = endsOn(sub);
  text("cancel-at-period-end", state.subscription ? (ends ? `Ends on ${fmtDay(ends)}` : "Renews") : null);
  $("cancel-at-period-end").classList.toggle("warn", Boolean(ends));
  const onboarded = state.system?.onboarding_completed;
  text("onboarding", onboarded === undefined ? null : onboarded ? "✓ Completed" : "Not completed");

  const limits = plan.limits && typeof plan.limits === "object" ? plan.limits : {};
  const labels = config?.limit_labels;
  fillTable("limits", Object.entries(limits).map(([k, v]) => [limitLabel(k, labels), fmtNumber(v)]));
  const usage = state.usage && typeof state.usage === "object" ? state.usage : {};
  fillTable("usage", Object.entries(usage).map(([metric, u]) => [limitLabel(metric, labels), usageCell(u?.used ?? 0, limits[metric])]));

  const other = Object.fromEntries(Object.entries(state).filter(([k]) => !KNOWN_KEYS.has(k)));
  $("other").hidden = Object.keys(other).length === 0;
  $("other-data").textContent = JSON.stringify(other, null, 2);
}

// --- billing actions -----------------------------------------------------------------

/** Why actions are off right now, or "" when they may be used. */
function actionsOff(snap) {
  if (following) return "Billing actions are off while following another user.";
  if (snap.status === "unauthorized" || snap.status === "forbidden") return "Billing actions need a token the server accepts.";
  if (snap.status !== "live") return "Billing actions are paused until the connection is back.";
  if (!config) return "Checking whether billing is set up…";
  if (!config.stripe) return "Billing is not set up on this server (STRIPE_API_KEY is not set), so plans cannot be changed here.";
  return "";
}

/** The buttons that fit this subscription: checkout without a live one; else plan
 * changes, cancel or resume, and the billing portal. */
function buttonsFor(state) {
  const plans = config?.plans ?? [];
  const sub = state?.subscription;
  const current = state?.plan?.code;
  if (!sub || ENDED.has(sub.status)) {
    return plans.map((p) => ({ action: "checkout", plan: p.code, label: `Subscribe to ${p.name}`, id: `checkout-${p.code}` }));
  }
  const rank = plans.find((p) => p.code === current)?.rank ?? -1;
  const out = plans.filter((p) => p.code !== current).map((p) => ({
    action: "upgrade", plan: p.code, id: `upgrade-${p.code}`, primary: p.rank > rank,
    label: p.rank > rank ? `Upgrade to ${p.name}` : `Switch to ${p.name}`,
  }));
  if (endsOn(sub)) out.push({ action: "resume", label: "Keep my subscription", id: "resume" });
  else out.push({ action: "cancel", label: "Cancel at period end", id: "cancel" });
  out.push({ action: "portal", label: "Manage billing", id: "portal" });
  return out;
}

function renderActions(snap) {
  // Nothing known about the user yet (no cache, no answer): no buttons to offer.
  $("actions").hidden = snap.version === null;
  const off = actionsOff(snap);
  $("billing-note").hidden = !off;
  $("billing-note").textContent = off;
  const wanted = buttonsFor(snap.state);
  const key = wanted.map((b) => b.id).join(",");
  if ($("buttons").dataset.key !== key) {
    $("buttons").dataset.key = key;
    $("buttons").replaceChildren(...wanted.map((b) => {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.textContent = b.label;
      btn.dataset.testid = b.id;
      btn.dataset.label = b.label;
      if (b.primary) btn.className = "primary";
      btn.addEventListener("click", () => act(b.action, b.plan, btn));
      return btn;
    }));
  }
  for (const btn of $("buttons").querySelectorAll("button")) {
    btn.disabled = Boolean(off) || inFlight !== null;
    btn.textContent = inFlight === btn ? "Working…" : btn.dataset.label;
  }
  for (const kind of ["result", "error"]) {
    const el = $(kind);
    const show = message?.kind === kind;
    el.hidden = !show;
    el.textContent = show ? message.text : "";
    if (show) el.dataset.version = message.version;
    else delete el.dataset.version;
  }
}

function done(action, body) {
  const v = body?.version;
  if (action === "upgrade") return `Done: now on ${body?.state?.plan?.name ?? "the new plan"} (version ${v}).`;
  if (action === "cancel") return `Done: the subscription ends on ${fmtDay(endsOn(body?.state?.subscription) ?? "period end")} (version ${v}).`;
  return `Done: the subscription renews again (version ${v}).`;
}

async function act(action, plan, button) {
  if (inFlight || actionsOff(lastSnap)) return;
  const asOf = lastSnap.version ?? 0;
  inFlight = button;
  message = null;
  renderActions(lastSnap);
  try {
    const res = await fetch(`/v1/billing/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: plan ? JSON.stringify({ plan }) : "{}",
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) {
      message = { kind: "error", text: billingError(action, res.status, body), version: asOf };
    } else if (action === "checkout" || action === "portal") {
      message = { kind: "result", text: `Opening Stripe ${action === "checkout" ? "Checkout" : "billing portal"}…`, version: asOf };
      if (typeof body?.url === "string") location.assign(body.url);
    } else if (Number.isInteger(body?.version) && body.version >= (lastSnap.version ?? 0)) {
      // The socket may already show a newer version; then this message would be old news.
      message = { kind: "result", text: done(action, body), version: body.version };
    }
  } catch {
    message = { kind: "error", text: networkError(action), version: asOf, clearOnLive: true };
  } finally {
    inFlight = null;
    render(lastSnap);
  }
}

setInterval(() => lastSnap && store && tokenCheck !== "refused" && renderTimes(lastSnap), 1000);
start();
