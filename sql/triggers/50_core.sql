-- Capture on the core tables, and the generated extra_state() brought up to date.
SELECT statebus.install_capture(t, 'user_id')
FROM unnest(ARRAY['public.user_subscriptions', 'public.user_billing', 'public.user_usage',
                  'public.user_system_data']::regclass[]) AS t;
SELECT statebus.install_capture('public.users', 'id');
-- Tables joined with statebus.track(): their generated functions follow this version
-- of the capture code too.
SELECT statebus.install_capture(t.table_name, t.user_column) FROM statebus.tracked t;

CREATE OR REPLACE TRIGGER statebus_capture_plans AFTER UPDATE ON public.plans
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION statebus.capture_plans();

SELECT statebus.rebuild_extra_states();
