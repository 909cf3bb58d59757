// The demo page: one store, one render function, no framework.
// Everything the page shows comes from store.getSnapshot(); the upgrade button
// only POSTs, and the new plan arrives like any other change, over the socket.
import { connect, decodeJwt } from "/statebus.js";

const TOKEN_KEY = "statebus:demo:token";
const USER_KEY = "statebus:demo:user_id";
const KNOWN_KEYS = new Set(["plan", "subscription", "billing", "usage", "system"]);
const STATUS_TEXT = {
  unauthorized: "The server rejected the token.",
  forbidden: "This token may not follow this user.",
  too_many: "Too many open connections for this user; trying again in a minute.",
  offline: "You are offline; reconnecting when the network is back.",
};
const PLAN_LABELS = { glow_up: "Glow Up", viral_surge: "Viral Surge" };

const $ = (id) => document.getElementById(id);
let store = null;
let token = null;
let lastSnap = null;

// --- token: from #token=... once, then sessionStorage (per tab, gone with the tab) ---

// Returns [token, userId] from the fragment (userId: admins following someone).
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

function showTokenBox(hint) {
  $("token-box").hidden = false;
  if (hint) $("token-hint").textContent = hint;
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
  $("token-box").hidden = true;
  $("app").hidden = false;
  $("indicators").hidden = false;
  store = connect({ url: "/v1/ws", getToken: async () => token, userId: userId || undefined });
  window.statebusStore = store;
  store.subscribe(() => render(store.getSnapshot()));
  render(store.getSnapshot());

  const exp = decodeJwt(token)?.exp;
  $("token-exp").textContent = exp ? `Token expires ${new Date(exp * 1000).toLocaleString()}` : "";
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
  return typeof n === "number" ? n.toLocaleString() : n === null ? "unlimited" : JSON.stringify(n);
}

function fmtDate(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const days = Math.round((d - Date.now()) / 86_400_000);
  const rel = days === 0 ? "today" : days > 0 ? `in ${days} day${days === 1 ? "" : "s"}` : `${-days} day${days === -1 ? "" : "s"} ago`;
  return `${d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" })} (${rel})`;
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
  label.textContent = typeof limit === "number" ? `${fmtNumber(used)} / ${fmtNumber(limit)}` : `${fmtNumber(used)} / ∞`;
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

function render(snap) {
  if (snap === lastSnap) return;
  lastSnap = snap;
  document.body.dataset.status = snap.status;
  text("status", snap.status);
  text("role", snap.leader ? "leader" : "follower");
  $("role").classList.toggle("leader", snap.leader);
  text("version", snap.version);
  text("user-id", snap.user_id);

  const why = STATUS_TEXT[snap.status];
  const detail = snap.error && snap.status !== "live" ? `${snap.error.code}: ${snap.error.message}` : "";
  const err = why ? (detail ? `${why} (${detail})` : why) : detail;
  $("conn-error").hidden = !err;
  $("conn-error").textContent = err;
  if (snap.status === "unauthorized") {
    showTokenBox("The token was rejected or has expired. Paste a new one.");
  }

  const state = snap.state;
  const known = snap.version !== null; // null: nothing cached and no answer yet
  $("empty").hidden = !(known && state === null);
  $("plan-card").hidden = !(state && typeof state === "object");
  if (!state || typeof state !== "object") {
    $("other").hidden = true;
    updateButtons(null);
    return;
  }

  const plan = state.plan || {};
  const sub = state.subscription || {};
  text("plan-name", plan.name);
  text("plan-code", plan.code);
  text("sub-status", sub.status || "none");
  $("sub-status").dataset.value = sub.status || "none";
  text("period-end", fmtDate(sub.current_period_end));
  $("period-end").title = sub.current_period_end || "";
  text("cancel-at-period-end", sub.cancel_at_period_end === undefined ? null
    : sub.cancel_at_period_end ? "Cancels" : "Renews");
  $("cancel-at-period-end").classList.toggle("warn", sub.cancel_at_period_end === true);
  const onboarded = state.system?.onboarding_completed;
  text("onboarding", onboarded === undefined ? null : onboarded ? "✓ Completed" : "Not completed");

  const limits = plan.limits && typeof plan.limits === "object" ? plan.limits : {};
  fillTable("limits", Object.entries(limits).map(([k, v]) => [k, fmtNumber(v)]));
  const usage = state.usage && typeof state.usage === "object" ? state.usage : {};
  fillTable("usage", Object.entries(usage).map(([metric, u]) => [metric, usageCell(u?.used ?? 0, limits[metric])]));

  const other = Object.fromEntries(Object.entries(state).filter(([k]) => !KNOWN_KEYS.has(k)));
  $("other").hidden = Object.keys(other).length === 0;
  $("other-data").textContent = JSON.stringify(other, null, 2);
  updateButtons(plan.code);
}

// --- upgrade ------------------------------------------------------------------------

let inFlight = false;

function updateButtons(currentPlan) {
  for (const btn of document.querySelectorAll("button[data-plan]")) {
    btn.hidden = btn.dataset.plan === currentPlan;
    btn.disabled = inFlight;
  }
}

async function upgrade(plan, button) {
  if (inFlight) return;
  inFlight = true;
  const label = button.textContent;
  button.textContent = "Working…";
  updateButtons(lastSnap?.state?.plan?.code);
  $("error").hidden = true;
  $("upgrade-result").hidden = true;
  try {
    const res = await fetch("/v1/billing/upgrade", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ plan }),
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) {
      const what = body?.error ? `${body.error}: ${body.message ?? ""}` : res.statusText;
      throw new Error(`Upgrade failed (${res.status}) ${what}`.trim());
    }
    $("upgrade-result").textContent =
      `Done: now on ${body?.state?.plan?.name ?? PLAN_LABELS[plan] ?? plan} (version ${body?.version ?? "?"}).`;
    $("upgrade-result").hidden = false;
  } catch (e) {
    $("error").textContent = e instanceof TypeError ? `Upgrade failed: network error (${e.message})` : e.message;
    $("error").hidden = false;
  } finally {
    inFlight = false;
    button.textContent = label;
    updateButtons(lastSnap?.state?.plan?.code);
  }
}

for (const btn of document.querySelectorAll("button[data-plan]")) {
  btn.addEventListener("click", () => upgrade(btn.dataset.plan, btn));
}

start();
