// Run by tests/unit/test_browser_js.py with Node: the demo's wording and the client's backoff.
import assert from "node:assert/strict";
import { backoffDelayMs } from "../../../server/statebus/static/statebus.js";
import { connectionText, provenance, sourceLabel, tokenText } from "../../../server/statebus/static/demo-words.js";

// backoff: uniform in [0, min(cap, base * 2 ** (attempt - 1))], as statebus/backoff.py.
assert.equal(backoffDelayMs(0), 0);
for (const [attempt, ceiling] of [[1, 250], [2, 500], [3, 1000], [6, 8000], [7, 10000], [60, 10000]]) {
  let max = 0;
  for (let i = 0; i < 2000; i++) {
    const ms = backoffDelayMs(attempt);
    assert.ok(ms >= 0 && ms <= ceiling, `${attempt}: ${ms} > ${ceiling}`);
    max = Math.max(max, ms);
  }
  assert.ok(max > ceiling * 0.9, `attempt ${attempt} never came near ${ceiling}`);
}
assert.ok(backoffDelayMs(3, 100, 5000) <= 400);

// writers
const labels = {
  stripe_webhook: "Stripe webhook", upgrade_api: "Upgrade API", checkout: "Stripe Checkout",
  cancel: "Cancel", resume: "Resume", reconcile: "Reconcile", demo: "Demo seed", sql: "SQL",
  "app:signup": "App: signup", something_new: "something_new",
};
for (const [source, label] of Object.entries(labels)) assert.equal(sourceLabel(source), label);
assert.equal(sourceLabel(null), null);

const now = Date.parse("2026-11-29T10:00:02.500Z");
const snap = { version: 12, committed_at: "2026-11-29T10:00:00.123456Z", source: "stripe_webhook" };
assert.equal(provenance(snap, now), "v12 · 2 s ago · Stripe webhook");
assert.equal(provenance({ version: 0, committed_at: null, source: null }, now), "v0 · no changes yet");
assert.equal(provenance({ version: 3, committed_at: null, source: null }, now), "v3");
assert.equal(provenance({ ...snap, committed_at: "2026-11-29T09:55:00Z" }, now), "v12 · 5 min ago · Stripe webhook");

// connection and token wording: who decided
const restarting = { status: "reconnecting", retry_at: now + 3000, error: { code: "server_restarting", origin: "server", message: "x" } };
assert.equal(connectionText(restarting, now), "The server is restarting. Reconnecting… Next try in 3 s.");
const lost = { status: "reconnecting", retry_at: null, error: { code: "connection_lost", origin: "network", message: "x" } };
assert.match(connectionText(lost, now), /^Disconnected: the server does not answer\. Reconnecting…$/);
assert.equal(connectionText({ status: "live", error: null }, now), "");
const expired = tokenText({ code: "token_expired", origin: "client", expired_at: "2026-11-29T09:00:00Z", message: "" });
assert.match(expired, /by this browser's clock/);
assert.doesNotMatch(expired, /server/);
assert.match(tokenText({ code: "token_expired", origin: "server", message: "token has expired" }), /^The server says/);
assert.match(tokenText({ code: "invalid_token", origin: "server", message: "bad signature" }), /^The server refused this token: bad signature/);
assert.doesNotMatch(tokenText({ code: "token_malformed", origin: "client", message: "" }), /server/);
console.log("ok");
