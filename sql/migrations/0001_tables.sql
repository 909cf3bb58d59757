-- The app's subscription tables (schema public, docs/protocol.md) and statebus's
-- own bookkeeping (schema statebus). Functions and triggers live in sql/triggers/ and
-- are re-applied by every `statebus migrate`, so this file only holds data.

CREATE SCHEMA IF NOT EXISTS statebus;

CREATE TABLE public.plans (
    code            text PRIMARY KEY CHECK (code ~ '^[a-z0-9_]{1,64}$'),
    name            text NOT NULL CHECK (name <> ''),
    stripe_price_id text UNIQUE,
    rank            int  NOT NULL DEFAULT 0,
    limits          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limits) = 'object')
);

CREATE TABLE public.users (
    id         text PRIMARY KEY CHECK (id <> '' AND length(id) <= 255),
    email      text NOT NULL CHECK (position('@' in email) > 1),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.user_subscriptions (
    user_id                text PRIMARY KEY REFERENCES public.users (id) ON DELETE CASCADE,
    plan                   text NOT NULL REFERENCES public.plans (code) ON UPDATE CASCADE,
    status                 text NOT NULL CHECK (status IN (
        'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due',
        'canceled', 'unpaid', 'paused')),
    stripe_subscription_id text UNIQUE,
    current_period_end     timestamptz,
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    -- Which Stripe state this row reflects, so an older one is never written over it.
    stripe_updated_at      timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.user_billing (
    user_id            text PRIMARY KEY REFERENCES public.users (id) ON DELETE CASCADE,
    stripe_customer_id text UNIQUE
);

CREATE TABLE public.user_usage (
    user_id      text   NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    metric       text   NOT NULL CHECK (metric ~ '^[a-z0-9_]{1,64}$'),
    used         bigint NOT NULL DEFAULT 0 CONSTRAINT user_usage_used_not_negative CHECK (used >= 0),
    period_start timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, metric)
);

CREATE TABLE public.user_system_data (
    user_id               text PRIMARY KEY REFERENCES public.users (id) ON DELETE CASCADE,
    onboarding_completed  boolean NOT NULL DEFAULT false
);

CREATE INDEX user_subscriptions_plan_idx ON public.user_subscriptions (plan);

-- Latest version per user. A row outlives the user's data, so a user deleted and
-- created again continues from the old version instead of reusing numbers.
CREATE TABLE statebus.versions (
    user_id      text PRIMARY KEY,
    version      bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    state        jsonb,
    committed_at timestamptz,
    source       text
);

-- Every version ever made (until pruned; the latest per user is never pruned).
CREATE TABLE statebus.history (
    user_id      text        NOT NULL,
    version      bigint      NOT NULL,
    state        jsonb,
    committed_at timestamptz NOT NULL,
    source       text        NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE INDEX history_committed_at_idx ON statebus.history (committed_at);

-- Further tables joined to the state with statebus.track() (the six core tables are
-- assembled by sql/triggers/20_state.sql and are not listed here).
CREATE TABLE statebus.tracked (
    table_name  regclass PRIMARY KEY,
    user_column name     NOT NULL,
    state_key   text     NOT NULL UNIQUE CHECK (state_key ~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$'),
    row_key     name
);

-- Users touched by transactions in flight, keyed by transaction. Unlogged: rows live
-- only until their transaction's commit-time flush, so there is nothing to recover.
CREATE UNLOGGED TABLE statebus.dirty (
    txid    xid8 NOT NULL,
    user_id text NOT NULL,
    PRIMARY KEY (txid, user_id)
);

-- One row per capturing transaction; its deferred constraint trigger (installed by
-- sql/triggers/30_flush.sql) runs the flush once, at commit.
CREATE UNLOGGED TABLE statebus.commit_hook (
    txid xid8 PRIMARY KEY
);

CREATE TABLE statebus.settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO statebus.settings (name, value) VALUES
    ('history_retention', '30 days'),
    ('notify_inline_limit', '7900');
