-- How the product names each limit of a plan, for people: {"posts_per_month": "Posts
-- per month", "seats": "Team seats"}. Keys are those of plans.limits (usage metrics of
-- the same name share the label). GET /v1/config serves them, so a page shows the
-- product's words without a table of names in its code; a key without a label is shown
-- as it is. Not part of the state document: renaming a label is not a change of anyone's
-- subscription.
ALTER TABLE public.plans ADD COLUMN IF NOT EXISTS limit_labels jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE public.plans ADD CONSTRAINT plans_limit_labels_object
    CHECK (jsonb_typeof(limit_labels) = 'object');
