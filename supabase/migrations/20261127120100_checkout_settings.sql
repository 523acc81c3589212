-- Knobs of the checkout: amount bounds and rate limits. The value check is widened to cover them, so a
-- typo cannot stop every checkout.

insert into reserve.settings (key, value, description) values
  ('min_payment_amount', '100', 'Smallest charge in centavos (Stripe''s BRL minimum is 50).'),
  ('max_payment_amount', '5000000', 'Largest charge in centavos (R$ 50,000); above it a stay is sold by hand.'),
  ('checkouts_per_client_per_hour', '20', 'Checkouts one client (JWT sub) may start in a clock hour.'),
  ('max_payment_attempts', '5', 'Payment attempts one booking intent may make.');

alter table reserve.settings drop constraint settings_value_check;
alter table reserve.settings add constraint settings_value_check check (
  case when key not in ('hold_minutes_card', 'hold_minutes_pix', 'commission_bps', 'min_payment_amount',
                        'max_payment_amount', 'checkouts_per_client_per_hour', 'max_payment_attempts') then true
       when jsonb_typeof(value) <> 'number' then false
       when (value #>> '{}')::numeric <> trunc((value #>> '{}')::numeric) then false
       when key = 'commission_bps' then (value #>> '{}')::numeric between 0 and 9999
       when key in ('min_payment_amount', 'max_payment_amount') then (value #>> '{}')::numeric between 1 and 99999999
       when key = 'checkouts_per_client_per_hour' then (value #>> '{}')::numeric between 1 and 100000
       when key = 'max_payment_attempts' then (value #>> '{}')::numeric between 1 and 100
       else (value #>> '{}')::numeric between 1 and 1440 end);
