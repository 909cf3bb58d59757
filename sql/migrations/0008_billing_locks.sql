-- Billing that no other role can stall, keys that name each change, one live subscription.
--
-- statebus.stripe_locks: one row per Stripe subscription ('sub:<id>'), customer
-- ('customer:<id>') and user ('user:<id>', checkouts) that statebus has changed or read
-- under its lock. Writers lock the row (SELECT ... FOR UPDATE, with lock_timeout) instead
-- of a cluster-wide advisory lock: taking a row lock needs UPDATE on this table, which only
-- the owner has, whereas any role may take any advisory lock. `changes` counts the changes
-- statebus committed under this lock; read under it, it makes each Stripe idempotency key
-- name one change (a retry of an uncommitted change reuses it, the next change does not).
CREATE TABLE statebus.stripe_locks (
    key     text PRIMARY KEY,
    changes bigint NOT NULL DEFAULT 0 CHECK (changes >= 0)
);

-- Checkout Sessions statebus created, so a new one can expire the user's open ones.
CREATE TABLE statebus.checkout_sessions (
    id         text PRIMARY KEY,
    user_id    text        NOT NULL,
    price_id   text        NOT NULL,
    status     text        NOT NULL DEFAULT 'open' CHECK (status IN (
        'open', 'expired', 'complete')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkout_sessions_open_idx ON statebus.checkout_sessions (user_id)
    WHERE status = 'open';

-- A second live subscription of a user who already has one: kept out of the user's
-- state and listed here (and by `statebus stripe-events`) for an operator to refund or
-- cancel (docs/stripe.md). resolved_at is set once it ended or became the one shown.
CREATE TABLE statebus.stripe_duplicates (
    subscription_id      text PRIMARY KEY,
    user_id              text        NOT NULL,
    customer_id          text,
    kept_subscription_id text        NOT NULL,
    detected_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at          timestamptz
);
CREATE INDEX stripe_duplicates_open_idx ON statebus.stripe_duplicates (detected_at)
    WHERE resolved_at IS NULL;
