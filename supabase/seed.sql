-- A small living world for local development and demos: four Brazilian cities, a few properties,
-- units from studio to villa, and a 365-night calendar from today with some nights blocked.
-- Idempotent: running it again adds only calendar nights that are missing.

set local reserve.actor = 'seed';

insert into reserve.cities (code, name, state) values
  ('RIO', 'Rio de Janeiro', 'RJ'),
  ('SAO', 'São Paulo', 'SP'),
  ('FLN', 'Florianópolis', 'SC'),
  ('SSA', 'Salvador', 'BA')
on conflict (code) do nothing;

insert into reserve.properties_map (id, city_code, name, source, external_id, address) values
  ('a0000000-0000-4000-8000-000000000001', 'RIO', 'Copacabana Atlântica', 'seed', 'rio-copa', 'Av. Atlântica 1702, Copacabana'),
  ('a0000000-0000-4000-8000-000000000002', 'RIO', 'Casa Santa Teresa', 'seed', 'rio-santa', 'R. Almirante Alexandrino 660, Santa Teresa'),
  ('a0000000-0000-4000-8000-000000000003', 'SAO', 'Jardins Residence', 'seed', 'sao-jardins', 'R. Oscar Freire 900, Jardins'),
  ('a0000000-0000-4000-8000-000000000004', 'FLN', 'Lagoa da Conceição Chalés', 'seed', 'fln-lagoa', 'R. Henrique Veras 120, Lagoa'),
  ('a0000000-0000-4000-8000-000000000005', 'SSA', 'Pelourinho Solar', 'seed', 'ssa-pelo', 'Largo do Pelourinho 12, Centro Histórico')
on conflict (id) do nothing;

insert into reserve.unit_map (id, property_id, external_id, name, unit_type, max_occupancy, bedrooms, base_price, min_nights, max_nights) values
  ('b0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', 'copa-101', 'Studio 101', 'studio', 2, 0, 32000, 1, 30),
  ('b0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000001', 'copa-502', 'Ocean View 502', 'apartment', 4, 2, 68000, 2, 30),
  ('b0000000-0000-4000-8000-000000000003', 'a0000000-0000-4000-8000-000000000002', 'santa-casa', 'Casa inteira', 'house', 8, 4, 145000, 3, 60),
  ('b0000000-0000-4000-8000-000000000004', 'a0000000-0000-4000-8000-000000000003', 'jardins-loft', 'Loft Oscar Freire', 'loft', 2, 1, 41000, 1, 30),
  ('b0000000-0000-4000-8000-000000000005', 'a0000000-0000-4000-8000-000000000003', 'jardins-21', 'Apartamento 21', 'apartment', 5, 2, 56000, 2, 30),
  ('b0000000-0000-4000-8000-000000000006', 'a0000000-0000-4000-8000-000000000004', 'lagoa-chale-1', 'Chalé 1', 'house', 4, 2, 52000, 2, 30),
  ('b0000000-0000-4000-8000-000000000007', 'a0000000-0000-4000-8000-000000000004', 'lagoa-villa', 'Villa Lagoa', 'villa', 12, 6, 290000, 3, 30),
  ('b0000000-0000-4000-8000-000000000008', 'a0000000-0000-4000-8000-000000000005', 'pelo-suite', 'Suíte Colonial', 'room', 2, 1, 27000, 1, 14)
on conflict (id) do nothing;

-- Weekends (Friday and Saturday nights) cost 20% more; the room sells three of the same kind per night.
insert into reserve.availability_calendar (unit_id, date, allotment, price)
select u.id,
       d::date,
       case when u.unit_type = 'room' then 3 else 1 end,
       case when extract(isodow from d) in (5, 6) then u.base_price * 12 / 10 else u.base_price end
from reserve.unit_map u
cross join generate_series(current_date, current_date + 364, interval '1 day') as d
where u.id::text like 'b0000000-0000-4000-8000-%'
on conflict (unit_id, date) do nothing;

-- The host of Casa Santa Teresa closed two weeks for maintenance, 60 days from the first seed.
update reserve.availability_calendar
set is_blocked = true, is_available = false, block_reason = 'host maintenance'
where unit_id = 'b0000000-0000-4000-8000-000000000003'
  and date between current_date + 60 and current_date + 73
  and not is_blocked
  and not exists (select 1 from reserve.availability_calendar
                  where unit_id = 'b0000000-0000-4000-8000-000000000003' and is_blocked);
