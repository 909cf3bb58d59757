-- Queries of `statebus serve --demo`.

-- name: demo_user_plan
-- The demo user's plan as the database has it now (someone may have changed it since the seed).
SELECT plan FROM public.user_subscriptions WHERE user_id = $1;
