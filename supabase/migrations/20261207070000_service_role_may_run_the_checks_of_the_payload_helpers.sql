-- as_provider_update, as_webhook_event, as_provider_refund, as_provider_payout and status_update are
-- granted to service_role and run as their caller (SECURITY INVOKER), but the checks they call were
-- revoked from everyone: a service_role caller got 42501 on json_record_keys_check. The checks read no
-- table and write nothing, so service_role may run them.
grant execute on function reserve.json_record_keys_check(jsonb, text, text[], text[]) to service_role;
grant execute on function reserve.check_provider_update(reserve.provider_update) to service_role;
grant execute on function reserve.check_provider_payout(reserve.provider_payout) to service_role;
