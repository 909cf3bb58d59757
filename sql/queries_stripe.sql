-- Queries of the Stripe side (statebus.stripe): the webhook inbox and subscription writes.

-- name: stripe_inbox_insert
-- Stores one event unless its id is already there; a row back means "new". The NOTIFY
-- (delivered at commit) wakes the inbox workers; channel `statebus` is not used here.
WITH inserted AS (
    INSERT INTO statebus.stripe_events (id, type, created, payload, customer_id)
    VALUES ($1, $2, to_timestamp($3), $4::jsonb, $5)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify('statebus_stripe_inbox', id) FROM inserted;

-- name: stripe_inbox_claim
-- Leases the oldest due event for $1 seconds: a worker that dies mid-way leaves it due
-- again once the lease runs out. SKIP LOCKED keeps concurrent workers apart.
UPDATE statebus.stripe_events e
SET next_attempt_at = now() + make_interval(secs => $1), attempts = e.attempts + 1
WHERE e.id = (
    SELECT id FROM statebus.stripe_events
    WHERE status IN ('pending', 'retrying', 'unmatched') AND next_attempt_at <= now()
    ORDER BY next_attempt_at, created, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
RETURNING e.id, e.type, e.payload::text AS payload, e.attempts;

-- name: stripe_inbox_done
-- Outcome of one attempt: applied | ignored | failed end it (failed: for good, see
-- `statebus stripe-events`); retrying and unmatched are due again in $4 seconds, or
-- never by time when $4 is NULL (an unmatched event then waits for its customer's link).
UPDATE statebus.stripe_events
SET status = $2, last_error = $3,
    next_attempt_at = CASE WHEN $4::float8 IS NULL THEN 'infinity'
                           ELSE now() + make_interval(secs => $4::float8) END,
    applied_at = CASE WHEN $2 IN ('applied', 'ignored') THEN now() END
WHERE id = $1;

-- name: stripe_inbox_failed_count
SELECT count(*) FROM statebus.stripe_events WHERE status = 'failed';

-- name: stripe_inbox_stuck
-- Events not done: failed for good, or still retrying / waiting for a user ($1: failed only).
SELECT id, type, status, attempts, last_error, received_at, next_attempt_at
FROM statebus.stripe_events
WHERE status IN ('pending', 'retrying', 'unmatched', 'failed')
  AND (NOT $1::bool OR status = 'failed')
ORDER BY received_at, id
LIMIT $2;

-- name: stripe_inbox_requeue
-- One event due now with a fresh attempt budget (after fixing what made it fail).
WITH due AS (
    UPDATE statebus.stripe_events
    SET status = 'pending', attempts = 0, next_attempt_at = now(), applied_at = NULL
    WHERE id = $1
    RETURNING id
)
SELECT id, pg_notify('statebus_stripe_inbox', id) FROM due;

-- name: stripe_inbox_requeue_customer
-- A checkout linked this customer: its parked events are due now.
WITH due AS (
    UPDATE statebus.stripe_events SET status = 'pending', attempts = 0, next_attempt_at = now()
    WHERE customer_id = $1 AND status = 'unmatched'
    RETURNING id
)
SELECT count(*) AS requeued, pg_notify('statebus_stripe_inbox', $1)
FROM due HAVING count(*) > 0;

-- name: stripe_set_source
-- Names this transaction's versions in statebus.history (see statebus.write_source()).
SELECT set_config('statebus.source', $1, true);

-- name: stripe_lock_row
-- A lock row ('sub:<id>', 'customer:<id>', 'user:<id>') exists before it is locked; an
-- insert racing another waits for it (a lock wait like any other, under lock_timeout).
INSERT INTO statebus.stripe_locks (key) VALUES ($1) ON CONFLICT (key) DO NOTHING;

-- name: stripe_lock
-- Every Stripe-derived write of a subscription (worker, billing routes, reconcile) holds
-- this from reading Stripe until commit, so writes happen in the order Stripe was
-- observed; the customer's orders "this customer has no user" against a checkout linking
-- it. Only the owner may lock these rows (UPDATE privilege). Returns the change count.
SELECT changes FROM statebus.stripe_locks WHERE key = $1 FOR UPDATE;

-- name: stripe_lock_changed
-- One more change committed under this lock: the next change gets another idempotency key.
UPDATE statebus.stripe_locks SET changes = changes + 1 WHERE key = $1;

-- name: stripe_plans_for_prices
SELECT code, stripe_price_id FROM public.plans WHERE stripe_price_id = ANY ($1::text[]);

-- name: stripe_plan_price
SELECT code, stripe_price_id FROM public.plans WHERE code = $1;

-- name: stripe_user_for_customer
SELECT user_id FROM public.user_billing WHERE stripe_customer_id = $1;

-- name: stripe_user_exists
SELECT EXISTS (SELECT 1 FROM public.users WHERE id = $1);

-- name: stripe_customer_for_user
SELECT stripe_customer_id FROM public.user_billing WHERE user_id = $1;

-- name: stripe_local_subscription
SELECT user_id, plan, status, stripe_subscription_id, current_period_end,
       cancel_at_period_end, cancel_at
FROM public.user_subscriptions WHERE user_id = $1;

-- name: stripe_local_subscriptions
-- Every row that names a Stripe subscription (reconcile), or one user's row.
SELECT user_id, plan, status, stripe_subscription_id, current_period_end,
       cancel_at_period_end, cancel_at
FROM public.user_subscriptions
WHERE stripe_subscription_id IS NOT NULL AND ($1::text IS NULL OR user_id = $1)
ORDER BY user_id;

-- name: stripe_link_customer
-- Links a checkout's customer to its user; no write (so no version) when already linked.
INSERT INTO public.user_billing AS b (user_id, stripe_customer_id) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET stripe_customer_id = excluded.stripe_customer_id
WHERE b.stripe_customer_id IS DISTINCT FROM excluded.stripe_customer_id;

-- name: stripe_upsert_subscription
-- Writes Stripe's current subscription for a user. The WHERE skips rows that already
-- hold these values, so an unchanged subscription touches nothing (no updated_at bump,
-- no version). A row back means something was written.
INSERT INTO public.user_subscriptions AS s (
    user_id, plan, status, stripe_subscription_id, current_period_end,
    cancel_at_period_end, cancel_at, stripe_updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (user_id) DO UPDATE SET
    plan = excluded.plan,
    status = excluded.status,
    stripe_subscription_id = excluded.stripe_subscription_id,
    current_period_end = excluded.current_period_end,
    cancel_at_period_end = excluded.cancel_at_period_end,
    cancel_at = excluded.cancel_at,
    stripe_updated_at = excluded.stripe_updated_at,
    updated_at = now()
WHERE (s.plan, s.status, s.stripe_subscription_id, s.current_period_end,
       s.cancel_at_period_end, s.cancel_at)
      IS DISTINCT FROM
      (excluded.plan, excluded.status, excluded.stripe_subscription_id,
       excluded.current_period_end, excluded.cancel_at_period_end, excluded.cancel_at)
RETURNING s.user_id;

-- name: stripe_user_version
SELECT coalesce((SELECT version FROM statebus.versions WHERE user_id = $1), 0);

-- name: stripe_user_for_subscription
SELECT user_id FROM public.user_subscriptions WHERE stripe_subscription_id = $1;

-- name: checkout_open_sessions
-- The user's Checkout Sessions that may still be paid (a new checkout expires them).
SELECT id FROM statebus.checkout_sessions WHERE user_id = $1 AND status = 'open' ORDER BY created_at;

-- name: checkout_session_status
UPDATE statebus.checkout_sessions SET status = $2 WHERE id = $1 AND status = 'open';

-- name: checkout_session_insert
-- ON CONFLICT: a retried request whose key Stripe replayed names the same session.
INSERT INTO statebus.checkout_sessions (id, user_id, price_id) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING;

-- name: stripe_duplicate_insert
-- A second live subscription of a user who already has one; a row back means "new".
INSERT INTO statebus.stripe_duplicates (subscription_id, user_id, customer_id, kept_subscription_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (subscription_id) DO UPDATE SET kept_subscription_id = excluded.kept_subscription_id,
    resolved_at = NULL
WHERE stripe_duplicates.resolved_at IS NOT NULL
   OR stripe_duplicates.kept_subscription_id IS DISTINCT FROM excluded.kept_subscription_id
RETURNING subscription_id;

-- name: stripe_duplicate_resolve
-- The duplicate ended, or became the subscription the user is shown.
UPDATE statebus.stripe_duplicates SET resolved_at = now()
WHERE subscription_id = $1 AND resolved_at IS NULL;

-- name: stripe_duplicates_open
SELECT subscription_id, user_id, customer_id, kept_subscription_id, detected_at
FROM statebus.stripe_duplicates WHERE resolved_at IS NULL ORDER BY detected_at LIMIT $1;

-- name: stripe_duplicates_open_count
SELECT count(*) FROM statebus.stripe_duplicates WHERE resolved_at IS NULL;

-- name: stripe_billed_elsewhere
-- The user is linked to another customer and shown a subscription that has not ended:
-- a checkout's new customer must not take the user away from it.
SELECT EXISTS (
    SELECT 1 FROM public.user_billing b
    JOIN public.user_subscriptions s USING (user_id)
    WHERE b.user_id = $1 AND b.stripe_customer_id IS DISTINCT FROM $2
      AND b.stripe_customer_id IS NOT NULL
      AND s.stripe_subscription_id IS NOT NULL
      AND s.status NOT IN ('canceled', 'incomplete_expired'));

-- name: stripe_lock_user_row
-- A billing change locks the user's row after the subscription's and customer's locks
-- (the order every Stripe writer takes them in) and before changing anything in Stripe:
-- a writer holding it longer than lock_timeout fails the change before Stripe is called.
SELECT 1 FROM public.user_subscriptions WHERE user_id = $1 FOR UPDATE;
