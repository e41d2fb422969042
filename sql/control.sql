-- The control functions (create_subscription, start, stop, drop_subscription) and the status
-- view: argument checks, upstream checks with this very server as the upstream, privileges and
-- password masking. No worker runs: the launcher looks in database postgres, not this one.
\set VERBOSITY default
SET client_min_messages = warning;
CREATE EXTENSION logical_audit;
SELECT 'host=' || current_setting('unix_socket_directories') || ' port=' || current_setting('port')
       || ' dbname=' || current_database() AS self \gset
CREATE TABLE audited (id int PRIMARY KEY, note text);
CREATE PUBLICATION audit_pub FOR TABLE audited;
CREATE PUBLICATION "odd ""pub"" name" FOR TABLE audited;

-- Arguments are checked before anything connects.
SELECT logical_audit.create_subscription(NULL, :'self', ARRAY['audit_pub']);
SELECT logical_audit.create_subscription('', :'self', ARRAY['audit_pub']);
SELECT logical_audit.create_subscription('s', NULL, ARRAY['audit_pub']);
SELECT logical_audit.create_subscription('s', :'self', NULL);
SELECT logical_audit.create_subscription('s', :'self', '{}');
SELECT logical_audit.create_subscription('s', :'self', '{{audit_pub}}');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub', NULL]);
SELECT logical_audit.create_subscription('s', :'self', ARRAY['']);
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub', 'audit_pub']);
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], create_slot => NULL);
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], enabled => NULL);

-- Slot names: the default logical_audit_<name> must be a valid slot name too.
SELECT logical_audit.create_subscription('Crm', :'self', ARRAY['audit_pub']);
SELECT logical_audit.create_subscription(repeat('x', 50), :'self', ARRAY['audit_pub']);
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], slot_name => 'Bad-Slot');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], slot_name => '');

-- Options: known keys with boolean values. A
-- baseline snapshot needs the slot created with it, by the worker.
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], options => NULL);
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], options => '[]');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], options => '{"colour": true}');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], options => '{"messages": "yes"}');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], options => '{"messages": null}');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], create_slot => false,
                                         options => '{"snapshot": true}');
\echo :LAST_ERROR_SQLSTATE

-- The upstream must be reachable (its error never shows the password), have every publication
-- (the missing ones are named) and a pgoutput slot, created unless create_slot is false. Upstream
-- errors are worded by the connection layer: shown are their SQLSTATE, their hint and which of
-- the given words their message or detail mentions.
CREATE FUNCTION error_of(command text, VARIADIC words text[])
RETURNS TABLE (state text, hint text, mentions text[]) LANGUAGE plpgsql AS $$
DECLARE
	message text;
	detail text;
BEGIN
	EXECUTE command;
	RAISE EXCEPTION 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
	                        hint = PG_EXCEPTION_HINT;
	mentions := ARRAY(SELECT w FROM unnest(words) w WHERE strpos(message || ' ' || coalesce(detail, ''), w) > 0);
	RETURN NEXT;
END $$;
SELECT * FROM error_of($$SELECT logical_audit.create_subscription('s', 'host=/nonexistent port=1 password=secret',
                                                                  ARRAY['audit_pub'])$$, 'secret', '/nonexistent');
SELECT * FROM error_of(format('SELECT logical_audit.create_subscription(%L, %L, %L)', 's', :'self',
                              ARRAY['audit_pub', 'no_pub', 'Other Pub']), 'no_pub', 'Other Pub', 'audit_pub');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], create_slot => false);
SELECT 'created' FROM pg_create_logical_replication_slot('decoding_slot', 'test_decoding');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], slot_name => 'decoding_slot');
SELECT logical_audit.create_subscription('s', :'self', ARRAY['audit_pub'], slot_name => 'decoding_slot',
                                         options => '{"snapshot": true}');
\echo :LAST_ERROR_SQLSTATE

-- None of the failures left a row, a slot or an origin behind.
SELECT count(*) AS subscriptions FROM logical_audit.subscription;
SELECT slot_name FROM pg_replication_slots ORDER BY 1;
SELECT count(*) AS origins FROM pg_replication_origin;

-- A subscription: its slot is created upstream, its origin logical_audit_<id> here. Enabled, it
-- warns that the launcher does not look in this database.
SELECT logical_audit.create_subscription('crm', :'self' || ' password=secret', ARRAY['audit_pub', 'odd "pub" name'],
                                         options => '{"messages": false, "streaming": false, "binary": true}');
SELECT name, publications, slot_name, enabled, options FROM logical_audit.subscription;
SELECT slot_name, plugin, slot_type, database = current_database() AS here FROM pg_replication_slots ORDER BY 1;
SELECT count(*) AS origins_named_by_id
FROM pg_replication_origin o JOIN logical_audit.subscription s ON o.roname = 'logical_audit_' || s.id;
SELECT logical_audit.create_subscription('crm', :'self', ARRAY['audit_pub']);

-- An existing pgoutput slot serves with create_slot => false; disabled, nothing warns.
SELECT 'created' FROM pg_create_logical_replication_slot('given_slot', 'pgoutput');
SELECT logical_audit.create_subscription('hr', :'self', ARRAY['audit_pub'], slot_name => 'given_slot',
                                         create_slot => false, enabled => false);

-- A new subscription never takes an id whose origin exists already (as if another database of
-- this server had a subscription 3, or an earlier installation left its origin): it skips it.
SELECT last_value + 1 AS taken FROM logical_audit.subscription_id_seq \gset
SELECT 'created' FROM pg_replication_origin_create('logical_audit_' || :taken);
SELECT logical_audit.create_subscription('sales', :'self', ARRAY['audit_pub'], enabled => false);
SELECT id > :taken AS skipped_the_taken_id FROM logical_audit.subscription WHERE name = 'sales';
SELECT logical_audit.drop_subscription('sales');
SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname NOT IN
	(SELECT 'logical_audit_' || id FROM logical_audit.subscription);

-- Status: one row per subscription, stopped without a worker, and never the password.
SELECT name, enabled, pid, state, slot_name, received_lsn, flushed_lsn, upstream_lsn, lag_bytes,
       last_msg_send_time, last_msg_receipt_time, last_commit_time, transactions, changes,
       last_error, last_error_time
FROM logical_audit.status ORDER BY name;
SELECT count(*) AS rows_showing_password FROM logical_audit.status s WHERE s::text LIKE '%secret%';
SELECT count(*) AS workers FROM logical_audit.worker_status();

-- start and stop flip enabled; unknown names are errors.
SELECT logical_audit.start('hr');
SELECT logical_audit.stop('crm');
SELECT logical_audit.stop('crm');
SELECT name, enabled, state FROM logical_audit.status ORDER BY name;
SELECT logical_audit.start('nope');
SELECT logical_audit.stop('nope');
SELECT logical_audit.drop_subscription('nope');
SELECT logical_audit.start(NULL);
SELECT logical_audit.drop_subscription('crm', NULL);

-- Privileges: nothing is granted to PUBLIC but the schema.
CREATE ROLE regress_la_user;
SET ROLE regress_la_user;
SELECT logical_audit.create_subscription('x', :'self', ARRAY['audit_pub']);
SELECT logical_audit.start('crm');
SELECT logical_audit.stop('crm');
SELECT logical_audit.drop_subscription('crm');
SELECT * FROM logical_audit.status;
SELECT * FROM logical_audit.worker_status();
SELECT * FROM logical_audit.subscription;
SELECT * FROM logical_audit.transaction;
SELECT * FROM logical_audit.change;
SELECT * FROM logical_audit.message;
RESET ROLE;

-- Granted roles manage subscriptions without reading conninfos; a non-superuser must give a
-- password that the upstream asks for (this one trusts local connections).
GRANT EXECUTE ON FUNCTION logical_audit.create_subscription(text, text, text[], name, boolean, boolean, jsonb),
                          logical_audit.stop(text), logical_audit.worker_status() TO regress_la_user;
GRANT SELECT ON logical_audit.status TO regress_la_user;
SET ROLE regress_la_user;
SELECT logical_audit.create_subscription('x', :'self', ARRAY['audit_pub']);
SELECT logical_audit.create_subscription('x', :'self' || ' password=secret', ARRAY['audit_pub']);
SELECT logical_audit.stop('hr');
SELECT name, enabled, state FROM logical_audit.status ORDER BY name;
SELECT conninfo FROM logical_audit.subscription;
RESET ROLE;

-- drop_subscription: an unreachable upstream is an error unless the slot is left there; the
-- origin and the row go, the slot too when asked.
UPDATE logical_audit.subscription SET conninfo = 'host=/nonexistent port=1' WHERE name = 'hr';
\set SHOW_CONTEXT never
SELECT logical_audit.drop_subscription('hr');
-- Dropping an origin cannot be rolled back: not inside a transaction block.
BEGIN;
SELECT logical_audit.drop_subscription('hr', drop_slot => false);
ROLLBACK;
\set SHOW_CONTEXT errors
SELECT logical_audit.drop_subscription('hr', drop_slot => false);
SELECT logical_audit.drop_subscription('crm');
SELECT count(*) AS subscriptions FROM logical_audit.subscription;
SELECT slot_name FROM pg_replication_slots ORDER BY 1;
SELECT count(*) AS origins FROM pg_replication_origin;

-- With a baseline snapshot the worker creates the slot, not create_subscription. A new subscription
-- may take the name of a dropped one: its audit rows, snapshot included, are kept under its own id.
SELECT logical_audit.create_subscription('snap', :'self', ARRAY['audit_pub'], enabled => false,
                                         options => '{"snapshot": true}');
SELECT name, slot_name, options FROM logical_audit.subscription;
SELECT count(*) AS snap_slots FROM pg_replication_slots WHERE slot_name = 'logical_audit_snap';
SELECT logical_audit.drop_subscription('snap');
SELECT logical_audit.create_subscription('snap', :'self', ARRAY['audit_pub'], enabled => false,
                                         options => '{"snapshot": true}');
SELECT logical_audit.drop_subscription('snap');
SELECT name, dropped_at IS NOT NULL AS dropped FROM logical_audit.store ORDER BY subscription_id;
SELECT count(*) AS subscriptions FROM logical_audit.subscription;
SELECT slot_name FROM pg_replication_slots ORDER BY 1;

SELECT pg_drop_replication_slot('given_slot'), pg_drop_replication_slot('decoding_slot');
DROP EXTENSION logical_audit;
DROP ROLE regress_la_user;
DROP PUBLICATION audit_pub, "odd ""pub"" name";
DROP TABLE audited;
DROP FUNCTION error_of(text, text[]);
