// Run by tests/unit/test_browser_js.py with Node: the demo's wording and the client's backoff.
import assert from "node:assert/strict";
import { backoffDelayMs } from "../../../server/statebus/static/statebus.js";
import {
  UNREACHABLE_AFTER_MS, bannerText, limitLabel, provenance, sourceLabel, statusLabel, tokenText,
} from "../../../server/statebus/static/demo-words.js";

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
// the version is the top bar's badge alone: provenance says when and who
assert.equal(provenance(snap, now), "Changed 2 s ago by Stripe webhook");
assert.equal(provenance({ version: 0, committed_at: null, source: null }, now), "No changes yet");
assert.equal(provenance({ version: 3, committed_at: null, source: null }, now), "Changed");
assert.equal(provenance({ ...snap, committed_at: "2026-11-29T09:55:00Z" }, now), "Changed 5 min ago by Stripe webhook");

// limits are named by the plan's data; a key without a label is shown as it is
assert.equal(limitLabel("posts_per_month", { posts_per_month: "Posts per month" }), "Posts per month");
assert.equal(limitLabel("seats", { posts_per_month: "Posts per month" }), "seats");
assert.equal(limitLabel("seats", undefined), "seats");

// one banner: why, what is shown, when the next try is; "Reconnecting" only in the top bar
const restarting = { status: "reconnecting", version: 12, committed_at: snap.committed_at, retry_at: now + 3000, error: { code: "server_restarting", origin: "server", message: "x" } };
const downAt = now - 2000;
assert.equal(bannerText(restarting, downAt, now),
  "The server is restarting. Showing what was last received (changed 2 s ago); it may have changed since. Next try in 3 s.");
assert.equal(statusLabel(restarting, downAt, now), "Reconnecting…");
// ... and after UNREACHABLE_AFTER_MS it no longer pretends the server is restarting
const later = downAt + UNREACHABLE_AFTER_MS + 25_000;
const long = bannerText({ ...restarting, retry_at: later + 2000 }, downAt, later);
assert.match(long, /^Cannot reach the server since .+ \(40 s\)\. Showing what was last received .*Still trying\. Next try in 2 s\.$/);
assert.doesNotMatch(long, /restarting|Reconnecting/);
assert.equal(statusLabel(restarting, downAt, later), "Not connected");
const lost = { status: "reconnecting", version: null, retry_at: null, error: { code: "connection_lost", origin: "network", message: "x" } };
assert.equal(bannerText(lost, now, now), "The connection to the server was lost.");
const refused = { status: "reconnecting", version: 3, retry_at: null, error: { code: "invalid_token", origin: "server", message: "bad" } };
assert.doesNotMatch(bannerText(refused, downAt, later), /Cannot reach/); // the server answered
assert.equal(bannerText({ status: "live", error: null }, null, now), "");
assert.equal(bannerText({ status: "unauthorized", error: null }, null, now), "");
const expired = tokenText({ code: "token_expired", origin: "client", expired_at: "2026-11-29T09:00:00Z", message: "" });
assert.match(expired, /by this browser's clock/);
assert.doesNotMatch(expired, /server/);
assert.match(tokenText({ code: "token_expired", origin: "server", message: "token has expired" }), /^The server says/);
assert.match(tokenText({ code: "invalid_token", origin: "server", message: "bad signature" }), /^The server refused this token: bad signature/);
assert.doesNotMatch(tokenText({ code: "token_malformed", origin: "client", message: "" }), /server/);
console.log("ok");
