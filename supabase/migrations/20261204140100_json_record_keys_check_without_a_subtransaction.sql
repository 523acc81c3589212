-- json_record_keys_check tests a timestamp with pg_input_is_valid instead of casting it in a block that
-- catches the error: such a block is a subtransaction, and every webhook opened two of them (event_at of
-- the event and of the provider's update) before anything else. Same keys, same types, same RC001.

CREATE OR REPLACE FUNCTION reserve.json_record_keys_check(p jsonb, p_what text, p_keys text[], p_types text[])
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO ''
AS $function$
declare
  k text;
  t text;
  i integer;
begin
  if p is null or jsonb_typeof(p) <> 'object' then
    raise exception using errcode = 'RC001', message = format('%s must be a JSON object', p_what);
  end if;
  for k, t in select key, jsonb_typeof(value) from jsonb_each(p) loop
    i := array_position(p_keys, k);
    if i is null then
      raise exception using errcode = 'RC001',
        message = format('%s: unknown key %s (known: %s)', p_what, left(k, 64), array_to_string(p_keys, ', '));
    end if;
    continue when t = 'null';
    if p_types[i] = 'integer' then
      if t <> 'number' or (p ->> k)::numeric <> trunc((p ->> k)::numeric)
         or (p ->> k)::numeric not between 0 and 9007199254740991 then
        raise exception using errcode = 'RC001',
          message = format('%s: %s must be a whole number of minor units between 0 and 2^53 - 1, got %s', p_what, k, left(p ->> k, 64));
      end if;
    elsif p_types[i] in ('string', 'uuid', 'timestamptz') then
      if t <> 'string' then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a string, got %s', p_what, k, t);
      end if;
      if p_types[i] = 'uuid' and (p ->> k) !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a uuid, got %s', p_what, k, left(p ->> k, 64));
      end if;
      if p_types[i] = 'timestamptz' and not pg_input_is_valid(p ->> k, 'timestamptz') then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a timestamp, got %s', p_what, k, left(p ->> k, 64));
      end if;
    elsif p_types[i] = 'array' then
      if t <> 'array' then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a JSON array, got %s', p_what, k, t);
      end if;
    elsif p_types[i] = 'object' then
      if t not in ('object', 'array') then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a JSON object, got %s', p_what, k, t);
      end if;
    end if;
  end loop;
end
$function$;
