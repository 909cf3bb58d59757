-- Demo data for `statebus migrate --demo` / `statebus serve --demo`. Idempotent.
SET LOCAL statebus.source = 'demo';

INSERT INTO public.plans (code, name, stripe_price_id, rank, limits, limit_labels) VALUES
    ('free', 'Free', NULL, 0, '{"posts_per_month": 10, "seats": 1}',
     '{"posts_per_month": "Posts per month", "seats": "Team seats"}'),
    ('glow_up', 'Glow Up', 'price_glow_up', 1, '{"posts_per_month": 100, "seats": 3}',
     '{"posts_per_month": "Posts per month", "seats": "Team seats"}'),
    ('viral_surge', 'Viral Surge', 'price_viral_surge', 2, '{"posts_per_month": 1000, "seats": 10}',
     '{"posts_per_month": "Posts per month", "seats": "Team seats"}')
ON CONFLICT (code) DO NOTHING;

-- Demo databases seeded before plans had labels get them once (this makes one version
-- for users on these plans, as any change to a plan row does).
UPDATE public.plans SET limit_labels = '{"posts_per_month": "Posts per month", "seats": "Team seats"}'
WHERE code IN ('free', 'glow_up', 'viral_surge') AND limit_labels = '{}';

INSERT INTO public.users (id, email) VALUES ('user_2zRnraoVNDAegfHnci1xUMWybwz', 'demo@statebus.dev')
ON CONFLICT (id) DO NOTHING;

INSERT INTO public.user_subscriptions (user_id, plan, status, stripe_subscription_id,
                                       current_period_end, cancel_at_period_end)
VALUES ('user_2zRnraoVNDAegfHnci1xUMWybwz', 'glow_up', 'active', 'sub_demo_glow_up',
        date_trunc('day', now()) + interval '30 days', false)
ON CONFLICT (user_id) DO NOTHING;

INSERT INTO public.user_billing (user_id, stripe_customer_id)
VALUES ('user_2zRnraoVNDAegfHnci1xUMWybwz', 'cus_demo')
ON CONFLICT (user_id) DO NOTHING;

INSERT INTO public.user_usage (user_id, metric, used, period_start)
VALUES ('user_2zRnraoVNDAegfHnci1xUMWybwz', 'posts_per_month', 42, date_trunc('month', now()))
ON CONFLICT (user_id, metric) DO NOTHING;

INSERT INTO public.user_system_data (user_id, onboarding_completed)
VALUES ('user_2zRnraoVNDAegfHnci1xUMWybwz', true)
ON CONFLICT (user_id) DO NOTHING;
