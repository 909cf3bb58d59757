-- Stripe's webhook inbox: every event stored once by id, then applied by a worker.
--
-- The webhook endpoint only inserts here (so Stripe gets its 200 as soon as the event is
-- safe); workers claim due rows with FOR UPDATE SKIP LOCKED, re-fetch the subscription
-- from Stripe and write the subscription tables. Nothing reads this table to build states.

CREATE TABLE statebus.stripe_events (
    id              text PRIMARY KEY,
    type            text        NOT NULL,
    created         timestamptz NOT NULL,
    payload         jsonb       NOT NULL,
    -- The event's customer, so events parked as unmatched can be re-queued when a
    -- checkout links that customer to a user.
    customer_id     text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN (
        'pending', 'applied', 'ignored', 'unmatched', 'failed')),
    attempts        int         NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    applied_at      timestamptz
);

-- What workers scan: only rows that may still need work.
CREATE INDEX stripe_events_due_idx ON statebus.stripe_events (next_attempt_at)
    WHERE status IN ('pending', 'failed', 'unmatched');
CREATE INDEX stripe_events_unmatched_idx ON statebus.stripe_events (customer_id)
    WHERE status = 'unmatched';
