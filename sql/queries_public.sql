-- Queries behind what an unauthenticated page may read (GET /v1/config).

-- name: public_plans
-- The plans a user can buy (those with a Stripe price), cheapest first.
SELECT code, name, rank
FROM public.plans
WHERE stripe_price_id IS NOT NULL
ORDER BY rank, code;
