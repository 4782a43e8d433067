-- fidelity: deliveries in the shapes of Junction's published examples (test/fixtures/published):
-- meals whose nutrition is per food, a provider named only in a provider object, the 2023
-- catalog's malformed dates, an integer field holding "null", and lab events whose user is
-- malformed, numeric, only in data, or missing. Each typed value and each quarantine reason.
\set ECHO none
\i test/fixtures/published/fixtures.sql
\set ECHO all
INSERT INTO junction.webhook_secrets (secret, description)
VALUES ('whsec_ZmlkZWxpdHktdGVzdC1zZWNyZXQtMDE=', 'fidelity test secret');
CREATE FUNCTION pg_temp.deliver(msg_id text, body text) RETURNS bigint
LANGUAGE sql AS $$
  SELECT junction_receive(
           jsonb_build_object(
             'svix-id', msg_id,
             'svix-timestamp', extract(epoch FROM now())::bigint::text,
             'svix-signature', junction_sign_webhook('whsec_ZmlkZWxpdHktdGVzdC1zZWNyZXQtMDE=', msg_id,
                                                     extract(epoch FROM now())::bigint, body)),
           body)
$$;
SET timezone = 'Pacific/Auckland';   -- typing must not depend on the session's zone

BEGIN;
SELECT count(pg_temp.deliver('msg_fid_' || name, body)) AS delivered
FROM (SELECT name, body FROM published_fixture ORDER BY name) AS f;
SELECT junction_process_inbox() AS handled;
COMMIT;

-- every delivery: processed, or quarantined with the event type, the JSON path and the error
SELECT substr(i.headers ->> 'svix-id', 9) AS fixture, i.status, i.sqlstate, i.error
FROM junction.inbox AS i WHERE i.headers ->> 'svix-id' LIKE 'msg_fid_%' ORDER BY 1;

-- 1. meals: totals from the top level when it has them, else the sums over the foods
SELECT m.name, m.provider, m.source_type, m.energy_kcal, m.carbs, m.protein, m.fats_total, m.sugar,
       m.fibre, m.alcohol, m.water, m.cholesterol
FROM junction.meals AS m
WHERE m.user_id = '0190b2a0-0000-7000-8000-0000000000e1' ORDER BY m.name;
-- and each food, queryable (junction.meal_foods)
SELECT f.meal_id, f.food, f.energy_kcal, f.carbs, f.protein, f.fats_total, f.sugar, f.fibre,
       f.micros #>> '{minerals,sodium}' AS sodium
FROM junction.meal_foods AS f
WHERE f.user_id = '0190b2a0-0000-7000-8000-0000000000e1' ORDER BY f.meal_id, f.food;
-- the meal's totals equal the sum of its foods when Junction gave none
SELECT m.name, m.energy_kcal = sum(f.energy_kcal) AS energy_is_sum, m.carbs = sum(f.carbs) AS carbs_is_sum
FROM junction.meals AS m JOIN junction.meal_foods AS f ON f.user_id = m.user_id AND f.meal_id = m.id
WHERE m.user_id = '0190b2a0-0000-7000-8000-0000000000e1' GROUP BY m.name, m.energy_kcal, m.carbs ORDER BY 1;
-- a REST load (junction_sync's path) types a per-food meal the same way
SELECT junction._upsert_summaries(ARRAY[ROW(junction._next_received_seq(), '0190b2a0-0000-7000-8000-0000000000e2',
         'meal', NULL, now(), (SELECT body::jsonb -> 'data' FROM published_fixture WHERE name = 'meal_per_food')
       )::junction.typing_item]) AS loaded;
SELECT a.energy_kcal = b.energy_kcal AND a.carbs = b.carbs AND a.protein = b.protein
       AND a.fats_total = b.fats_total AND a.sugar = b.sugar AS rest_equals_webhook
FROM junction.meals AS a JOIN junction.meals AS b ON b.id = a.id
WHERE a.user_id = '0190b2a0-0000-7000-8000-0000000000e1' AND b.user_id = '0190b2a0-0000-7000-8000-0000000000e2';
-- data.data that is not a map of foods is refused, naming the field
SELECT expect_error(format('SELECT junction._upsert_summaries(ARRAY[ROW(1, %L, %L, NULL, now(), %L)::junction.typing_item])',
       '0190b2a0-0000-7000-8000-0000000000e2', 'meal',
       '{"id": "0190b2a7-0000-7000-8000-0000000000ff", "source": {"provider": "x"}, "data": [1, 2]}'));

-- 3. a provider named only in a data.provider object: typed, and the event says the same
SELECT s.provider, s.source_type, s.value, e.provider AS event_provider
FROM junction.samples AS s JOIN junction.events AS e ON e.svix_id = 'msg_fid_steps_provider_object'
WHERE s.user_id = '0190b2a0-0000-7000-8000-0000000000e1' AND s.resource = 'steps';

-- 5. the user of an event: the top-level user_id, else data.user_id; a uuid, for every family
SELECT e.svix_id, e.event_type, e.user_id, e.resource
FROM junction.events AS e WHERE e.svix_id LIKE 'msg_fid_labtest%' ORDER BY 1;
-- lab events are typed (junction.lab_orders): the order whose user is only in data.user_id, and
-- none of the quarantined ones
SELECT o.user_id, o.id, o.status, o.updated_at AT TIME ZONE 'UTC' AS updated_utc
FROM junction.lab_orders AS o WHERE o.id::text LIKE '0190b2a7-0000-7000-8000-00000000000_' ORDER BY o.id;
-- a malformed or missing user quarantines a typed event exactly as an untyped one
BEGIN;
SELECT pg_temp.deliver('msg_fid2_steps_bad_user', '{"event_type": "daily.data.steps.created",
  "data": {"user_id": "user-0042", "source": {"provider": "oura"}, "data": []}}') > 0 AS delivered;
SELECT pg_temp.deliver('msg_fid2_steps_no_user', '{"event_type": "daily.data.steps.created",
  "data": {"source": {"provider": "oura"}, "data": []}}') > 0 AS delivered;
SELECT pg_temp.deliver('msg_fid2_team_bad', '{"event_type": "labtest.order.created",
  "user_id": "0190b2a0-0000-7000-8000-0000000000e1", "team_id": "team-7", "data": {}}') > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT substr(i.headers ->> 'svix-id', 10) AS delivery, i.status, i.sqlstate, i.error
FROM junction.inbox AS i WHERE i.headers ->> 'svix-id' LIKE 'msg_fid2_%' ORDER BY 1;

-- 6. nothing of a quarantined delivery was typed
SELECT count(*) AS typed_from_quarantined
FROM junction.body WHERE id = '0190b2a7-0000-7000-8000-000000000004';
RESET timezone;
