// A React component that follows the signed-in user's plan with statebus.
//
// statebus.js is served by the statebus server at /statebus.js and its types at
// /statebus.d.ts; map the module to the types in tsconfig.json, e.g.
//   "paths": { "/statebus.js": ["./types/statebus.d.ts"] }
// The test suite type-checks this file against those declarations (tests/unit/test_typescript.py).
import { useSyncExternalStore } from "react";
import { connect, type Snapshot, type Source } from "/statebus.js";

// One store for the whole app: it shares one socket between all the browser's tabs.
const store = connect({
  url: "/v1/ws",
  getToken: () => fetch("/api/statebus-token").then((r) => r.text()),
});

const SOURCES: Record<string, string> = {
  stripe_webhook: "Stripe webhook",
  upgrade_api: "upgrade",
  checkout: "checkout",
  sql: "SQL",
};

function sourceLabel(source: Source | null): string {
  if (source === null) return "";
  if (source.startsWith("app:")) return `app (${source.slice(4)})`;
  return SOURCES[source] ?? source;
}

export function useStatebus(): Snapshot {
  return useSyncExternalStore(store.subscribe, store.getSnapshot);
}

export function PlanBadge() {
  const snap = useStatebus();
  const stale = snap.status !== "live";
  if (snap.version === null) return <span>Loading…</span>;
  if (snap.state === null) return <span>No plan yet</span>;
  const plan = snap.state.plan;
  const sub = snap.state.subscription;
  return (
    <span className={stale ? "stale" : undefined} title={`v${snap.version} · ${sourceLabel(snap.source)}`}>
      {plan?.name ?? "No plan"}
      {sub?.cancel_at_period_end ? " (ends at period end)" : null}
      {stale ? " (not live)" : null}
    </span>
  );
}

export function ConnectionNote() {
  const { status, error } = useStatebus();
  if (status === "live" || error === null) return null;
  // Say who decided: a token this browser refused is not the server's doing.
  const who = error.origin === "client" ? "this browser" : error.origin === "server" ? "the server" : "the network";
  return <p role="status">{`${status}: ${error.message} (${who})`}</p>;
}
