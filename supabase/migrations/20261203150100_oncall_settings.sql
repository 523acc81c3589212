-- The runbook's clocks as settings, read at call time: an audited UPDATE changes them, not a deploy.
-- Response times are SEVERITY LEVELS' (P1 15 min, P2 1 h, P3 4 h, P4 24 h); triage within 5 minutes,
-- an update every 30 minutes, monitoring 1 h (P1) or 4 h (P2) after the fix, the review within 48 h.

insert into reserve.settings (key, value, description) values
  ('incident_response_minutes', '{"P1": 15, "P2": 60, "P3": 240, "P4": 1440}',
   'Minutes an incident of each severity may stay unacknowledged before it is escalated (the runbook''s response time).'),
  ('incident_triage_minutes', '5', 'Minutes the runbook gives triage (Step 2); shown beside an open incident''s clock.'),
  ('incident_update_minutes', '30', 'Minutes without a posted update after which an open P1/P2 incident gets a reminder.'),
  ('incident_monitoring_minutes', '{"P1": 60, "P2": 240, "P3": 60, "P4": 60}',
   'Minutes an incident stays in monitoring after its fix before it closes (the alert must stay resolved).'),
  ('incident_review_hours', '48', 'Hours after the fix within which the post-incident review is due.'),
  ('notification_undeliverable_minutes', '10',
   'Minutes the oldest undelivered notification may wait before notifications_undeliverable fires.'),
  ('notification_backoff_seconds', '{"base": 5, "max": 600}',
   'Retry backoff of a failed notification: base * 2^(attempts-1) seconds, jittered, at most max.'),
  ('alert_digest_hour_utc', '8', 'The hour (UTC) the daily digest of P4 alerts is posted.');
