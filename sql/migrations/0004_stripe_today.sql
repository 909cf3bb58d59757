-- Stripe as it is today: scheduled ends (cancel_at), and an inbox whose retries end.
--
-- user_subscriptions.cancel_at: when the subscription is scheduled to end, if it is.
-- Flexible billing mode (Stripe's default for new subscriptions) schedules an end with
-- `cancel_at` alone; classic mode with `cancel_at_period_end` (cancel_at = period end).
ALTER TABLE public.user_subscriptions ADD COLUMN IF NOT EXISTS cancel_at timestamptz;

-- Inbox statuses: `retrying` is a failed attempt that will be tried again (with backoff,
-- a bounded number of times); `failed` is now final: listed by `statebus stripe-events`
-- and re-queued only by hand.
ALTER TABLE statebus.stripe_events DROP CONSTRAINT IF EXISTS stripe_events_status_check;
UPDATE statebus.stripe_events SET status = 'retrying' WHERE status = 'failed';
ALTER TABLE statebus.stripe_events ADD CONSTRAINT stripe_events_status_check CHECK (status IN (
    'pending', 'retrying', 'applied', 'ignored', 'unmatched', 'failed'));

DROP INDEX IF EXISTS statebus.stripe_events_due_idx;
CREATE INDEX stripe_events_due_idx ON statebus.stripe_events (next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'unmatched');
CREATE INDEX stripe_events_failed_idx ON statebus.stripe_events (received_at)
    WHERE status = 'failed';
