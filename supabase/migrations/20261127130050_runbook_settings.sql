-- Knobs of the runbook's machinery: when a payment counts as stuck, how big the audit log may grow.
-- The value check is widened to cover them (and the webhook inbox's max_webhook_attempts).

insert into reserve.settings (key, value, description) values
  ('stuck_minutes_card', '60', 'A card payment pending or processing this long is stuck (reserve.stuck_payments; the runbook''s "processing > 1 hour").'),
  ('stuck_minutes_pix', '45', 'A PIX payment pending or processing this long is stuck: past its 30-minute hold, the poller''s grace and one more poll.'),
  ('audit_log_max_mb', '5120', 'audit_logs size (table, indexes, TOAST) above which the P3 audit log growth alert fires (5 GB).');
alter table reserve.settings drop constraint settings_value_check;
alter table reserve.settings add constraint settings_value_check check (
  case when key not in ('hold_minutes_card', 'hold_minutes_pix', 'commission_bps', 'min_payment_amount',
                        'max_payment_amount', 'checkouts_per_client_per_hour', 'max_payment_attempts',
                        'max_webhook_attempts', 'stuck_minutes_card', 'stuck_minutes_pix', 'audit_log_max_mb') then true
       when jsonb_typeof(value) <> 'number' then false
       when (value #>> '{}')::numeric <> trunc((value #>> '{}')::numeric) then false
       when key = 'commission_bps' then (value #>> '{}')::numeric between 0 and 9999
       when key in ('min_payment_amount', 'max_payment_amount') then (value #>> '{}')::numeric between 1 and 99999999
       when key = 'checkouts_per_client_per_hour' then (value #>> '{}')::numeric between 1 and 100000
       when key in ('max_payment_attempts', 'max_webhook_attempts') then (value #>> '{}')::numeric between 1 and 100
       when key = 'audit_log_max_mb' then (value #>> '{}')::numeric between 1 and 10000000
       else (value #>> '{}')::numeric between 1 and 1440 end);
