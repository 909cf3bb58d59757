-- Queries behind what an unauthenticated page may read (GET /v1/config).

-- name: public_plans
-- The plans a user can buy (those with a Stripe price), cheapest first.
SELECT code, name, rank
FROM public.plans
WHERE stripe_price_id IS NOT NULL
ORDER BY rank, code;

-- name: public_limit_labels
-- Every plan's labels for its limits, merged (plans agree on what a key means).
SELECT coalesce(jsonb_object_agg(l.key, l.value), '{}'::jsonb)::text
FROM public.plans p, jsonb_each_text(p.limit_labels) AS l (key, value);
