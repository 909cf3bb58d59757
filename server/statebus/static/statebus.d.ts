// TypeScript declarations for statebus.js, the browser client (served at /statebus.d.ts).
//
//   import { connect } from "/statebus.js";
//   const store = connect({ url: "/v1/ws", getToken: async () => token });
//   const snap = useSyncExternalStore(store.subscribe, store.getSnapshot);
//
// To use them, map the module to this file, e.g. in tsconfig.json:
//   "paths": { "/statebus.js": ["./types/statebus.d.ts"] }

/** Any JSON value: the state document is open-ended (one key per tracked table). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Who made a version. statebus's own writers use these labels; the host app may
 * label its transactions "app:..." (SET LOCAL statebus.source = 'app:signup');
 * anything else is "sql". Null only at version 0 (no row yet). */
export type Source =
  | "stripe_webhook"
  | "upgrade_api"
  | "checkout"
  | "cancel"
  | "resume"
  | "reconcile"
  | "demo"
  | "sql"
  | `app:${string}`
  | (string & {});

export interface Plan {
  code: string;
  name: string;
  limits?: { [limit: string]: number | null };
  [key: string]: unknown;
}

export interface Subscription {
  status: string;
  current_period_end?: string | null;
  cancel_at_period_end?: boolean;
  cancel_at?: string | null;
  [key: string]: unknown;
}

/** The state document. The known keys are typed; every tracked table adds its own. */
export interface State {
  plan?: Plan | null;
  subscription?: Subscription | null;
  billing?: { [key: string]: Json } | null;
  usage?: { [metric: string]: { used: number; period_start?: string | null; [key: string]: Json | undefined } } | null;
  system?: { onboarding_completed?: boolean; [key: string]: Json | undefined } | null;
  [table: string]: unknown;
}

/** What GET /v1/state answers and every socket snapshot carries. */
export interface Envelope {
  user_id: string;
  /** Grows by one per committed change; 0 before the user has any row. */
  version: number;
  /** Commit time, ISO-8601 UTC; null at version 0. */
  committed_at: string | null;
  source: Source | null;
  /** null at version 0. */
  state: State | null;
}

export type Status =
  | "connecting" // no answer from the server yet (a cached snapshot may be shown)
  | "live" // the socket is up and the snapshot is the latest
  | "reconnecting" // the socket dropped; retrying with backoff (see retry_at)
  | "offline" // the browser says it has no network; retrying when it is back
  | "unauthorized" // the token was refused (see error.origin: this browser or the server)
  | "forbidden" // the token may not follow this user; reconnect() to try again
  | "too_many" // too many sockets for this user; retrying in a minute
  | "closed"; // store.close() was called

export interface StoreError {
  /** e.g. "token_expired", "token_malformed", "invalid_token", "server_restarting",
   * "connection_lost", "unreachable", "forbidden", "too_many_sockets". */
  code: string;
  message: string;
  /** Who decided: this browser (before sending), the server, or nobody answered. */
  origin: "client" | "server" | "network";
  /** The socket's close code, when a close decided it. */
  close_code?: number;
  /** token_expired decided by the browser: when the token expired (ISO-8601). */
  expired_at?: string;
}

/** What getSnapshot() returns: frozen, and replaced only when something changes. */
export interface Snapshot {
  readonly status: Status;
  readonly user_id: string | null;
  /** null until a snapshot is known (from the cache, another tab or the socket). */
  readonly version: number | null;
  readonly committed_at: string | null;
  readonly source: Source | null;
  readonly state: State | null;
  readonly error: StoreError | null;
  /** This tab holds the browser's one socket (only meaningful while status is "live"). */
  readonly leader: boolean;
  /** When the next connection attempt is due (ms since the epoch), while reconnecting. */
  readonly retry_at: number | null;
}

export interface ConnectOptions {
  /** The socket, e.g. "/v1/ws" (resolved against the page; http becomes ws). */
  url: string;
  /** Called before every connection and before the token expires; may return a cached token. */
  getToken: () => string | Promise<string>;
  /** Admins: follow this user instead of the token's `sub`. */
  userId?: string;
  storageKey?: string;
  channelName?: string;
  lockName?: string;
  WebSocketImpl?: typeof WebSocket;
}

export interface StoreDebug {
  socketsOpened: number;
  messages: number;
  reconnects: number;
  tokenRefreshes: number;
  peerMessages: number;
  /** Heartbeat pings sent (after 7 s without a frame; no answer in 5 s = connection lost). */
  pings: number;
}

export interface Store {
  /** Fits React's useSyncExternalStore(store.subscribe, store.getSnapshot). */
  subscribe(listener: () => void): () => void;
  getSnapshot(): Snapshot;
  readonly status: Status;
  isLeader(): boolean;
  readonly debug: StoreDebug;
  /** Try again now: after "unauthorized" (new sign-in), "forbidden", "too_many", or a backoff. */
  reconnect(): void;
  close(): void;
}

export function connect(options: ConnectOptions): Store;

/** A JWT's claims, decoded without verification (null when it is not a JWT). */
export function decodeJwt(token: string): { sub?: string; exp?: number; iat?: number; [claim: string]: unknown } | null;

/** The retry delay in ms for attempt 1, 2, ...: full jitter, exponential, bounded. */
export function backoffDelayMs(attempt: number, base?: number, cap?: number): number;
