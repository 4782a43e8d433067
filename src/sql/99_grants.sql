-- Privileges: PUBLIC may verify and sign (pure functions of their arguments) and nothing else.
REVOKE ALL ON ALL TABLES IN SCHEMA junction FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA junction FROM PUBLIC;
REVOKE ALL ON FUNCTION junction_receive(jsonb, text), junction_process_inbox(integer),
                       junction_api(text, text, jsonb, jsonb),
                       junction_replay(bigint[]) FROM PUBLIC;
-- the receiver role (created in 40_worker.sql) stores deliveries and nothing else
GRANT USAGE ON SCHEMA junction TO junction_receiver;
GRANT EXECUTE ON FUNCTION junction_receive(jsonb, text) TO junction_receiver;
GRANT INSERT (headers, body) ON junction.inbox TO junction_receiver;
