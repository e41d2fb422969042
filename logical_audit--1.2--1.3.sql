-- logical_audit 1.2 -> 1.3: the latest-image store found by a hash of the row key.
--
-- row_image's index compared jsonb keys at every step of every descent: each change the worker
-- records looks its row up and most write it. The index now holds a 64-bit number per key after
-- the relation id (row_key_hash: the key's integer when it is one integral number, so rows
-- numbered in order are filed in order; jsonb's own hash otherwise; equal for keys jsonb calls
-- equal); a lookup compares integers and checks the key of the rows it finds.
--
-- And the store survives pg_dump and restore: the extension's partitioned tables (change_data,
-- transaction_data, message_data) carry no index of their own any more, each subscription's
-- partition carries them instead. pg_dump writes those partitions and their indexes, which are
-- not the extension's; an index of the extension's table would already have been made on them
-- by CREATE EXTENSION and ATTACH PARTITION when the restore makes them again (errors "multiple
-- primary keys", "already exists"). The store's row of each subscription, which pg_dump restores
-- before the subscription, is no longer made a second time by the subscription's trigger (which
-- failed the restore of the subscriptions).
\echo Use "ALTER EXTENSION logical_audit UPDATE TO '1.3'" to load this file. \quit

CREATE FUNCTION logical_audit.row_key_hash(jsonb) RETURNS bigint
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'logical_audit_row_key_hash';
COMMENT ON FUNCTION logical_audit.row_key_hash(jsonb) IS
'the number row_image''s index files a row key under: the key''s integer when it is one integral number, else a hash';

DROP INDEX logical_audit.row_image_key;
-- Not unique: two keys may share a number. The worker, the only writer, keeps one row per key.
-- The number is a column, computed once per row: the worker writes it with the row (it has just
-- looked the key up by it), SQL inserts have it computed.
ALTER TABLE logical_audit.row_image
	ADD COLUMN key_number bigint GENERATED ALWAYS AS (logical_audit.row_key_hash(row_key)) STORED;
CREATE INDEX row_image_key_hash ON logical_audit.row_image (relation_id, key_number);

-- Nothing uses the jsonb key order of 1.0's indexes any more.
DROP OPERATOR FAMILY logical_audit.row_key_ops USING btree;
DROP OPERATOR logical_audit.~<~ (jsonb, jsonb);
DROP FUNCTION logical_audit.row_key_lt(jsonb, jsonb);
DROP FUNCTION logical_audit.row_key_cmp(jsonb, jsonb);


-- ---------------------------------------------------------------------------------------------
-- Indexes from the extension's tables to each subscription's partition: each partition is
-- detached (its indexes stay, its own now), the extension's indexes dropped, and the partition
-- attached again, which reads it once to check its rows belong there.
DO $$
DECLARE
	detach text[];
	attach text[];
	statement text;
BEGIN
	SELECT array_agg(format('ALTER TABLE %s DETACH PARTITION %s', i.inhparent::regclass, i.inhrelid::regclass)),
	       array_agg(format('ALTER TABLE %s ATTACH PARTITION %s %s', i.inhparent::regclass, i.inhrelid::regclass,
	                        pg_get_expr(c.relpartbound, c.oid)))
	INTO detach, attach
	FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
	WHERE i.inhparent IN ('logical_audit.change_data'::regclass, 'logical_audit.transaction_data'::regclass,
	                      'logical_audit.message_data'::regclass);
	FOREACH statement IN ARRAY coalesce(detach, '{}') LOOP
		EXECUTE statement;
	END LOOP;
	DROP INDEX logical_audit.change_data_lsn;
	ALTER TABLE logical_audit.transaction_data DROP CONSTRAINT transaction_data_pkey;
	ALTER TABLE logical_audit.message_data DROP CONSTRAINT message_data_pkey;
	FOREACH statement IN ARRAY coalesce(attach, '{}') LOOP
		EXECUTE statement;
	END LOOP;
END
$$;

-- A subscription's store row is made once: a restore brings it before the subscription.
CREATE OR REPLACE FUNCTION logical_audit.store_subscription() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO logical_audit.store (subscription_id, name) VALUES (NEW.id, NEW.name)
		ON CONFLICT (subscription_id) DO NOTHING;
		RETURN NEW;
	END IF;
	UPDATE logical_audit.store SET dropped_at = now() WHERE subscription_id = OLD.id;
	RETURN OLD;
END
$$;

-- Creates the subscription's partition of each audit table if missing, with the table's indexes
-- (which its time partitions inherit), and the time partitions that hold t. Run by the worker
-- (ahead of need, and for a commit time no partition holds).
CREATE OR REPLACE FUNCTION logical_audit.create_partitions(subscription_id integer, t timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET DateStyle = 'ISO'
AS $$
DECLARE
	every interval := (SELECT s.partition_interval FROM logical_audit.store s
	                   WHERE s.subscription_id = create_partitions.subscription_id);
	kind text;
	top text;
	leaf text;
	r record;
	covered boolean;
	lower timestamptz;
	upper timestamptz;
BEGIN
	IF every IS NULL THEN
		RAISE EXCEPTION 'no audit store for subscription id %', subscription_id USING ERRCODE = 'undefined_object';
	END IF;
	r := logical_audit.partition_range(every, t);
	FOREACH kind IN ARRAY ARRAY['change', 'transaction', 'message'] LOOP
		top := format('%s_data_%s', kind, subscription_id);
		IF to_regclass('logical_audit.' || top) IS NULL THEN
			EXECUTE format('CREATE TABLE logical_audit.%I (LIKE logical_audit.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
			               'INCLUDING COMPRESSION INCLUDING STORAGE) PARTITION BY RANGE (commit_time)', top, kind || '_data');
			EXECUTE format(CASE kind
			               WHEN 'change' THEN 'CREATE INDEX %I ON logical_audit.%I (commit_lsn, ordinal)'
			               WHEN 'transaction' THEN 'ALTER TABLE logical_audit.%2$I ADD CONSTRAINT %1$I '
			                                       'PRIMARY KEY (commit_lsn, subscription_id, commit_time)'
			               ELSE 'ALTER TABLE logical_audit.%2$I ADD CONSTRAINT %1$I PRIMARY KEY (lsn, subscription_id, commit_time)'
			               END, top || CASE kind WHEN 'change' THEN '_commit_lsn_ordinal_idx' ELSE '_pkey' END, top);
			EXECUTE format('ALTER TABLE logical_audit.%I ATTACH PARTITION logical_audit.%I FOR VALUES IN (%s)',
			               kind || '_data', top, subscription_id);
		END IF;
		-- The range, cut where partitions made with another interval begin or end.
		SELECT max(p.to_time) FILTER (WHERE p.to_time <= t), min(p.from_time) FILTER (WHERE p.from_time > t),
		       bool_or(p.from_time <= t AND t < p.to_time)
		INTO lower, upper, covered
		FROM (SELECT p.from_time, p.to_time FROM logical_audit.partitions p
		      WHERE p.subscription_id = create_partitions.subscription_id AND p.audit_table = kind) p;
		CONTINUE WHEN coalesce(covered, false);
		lower := greatest(r.lower, lower);
		upper := least(r.upper, upper);
		leaf := format('%s_%s', top, to_char(lower, CASE WHEN lower = date_trunc('day', lower) THEN 'YYYYMMDD' ELSE 'YYYYMMDD_HH24MI' END));
		EXECUTE format('CREATE TABLE logical_audit.%I (LIKE logical_audit.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
		               'INCLUDING COMPRESSION INCLUDING STORAGE)', leaf, top);
		EXECUTE format('ALTER TABLE logical_audit.%I ATTACH PARTITION logical_audit.%I FOR VALUES FROM (%L) TO (%L)',
		               top, leaf, lower, upper);
	END LOOP;
END
$$;

-- row_timeline finds a row's latest image by the hash index.
-- The change rows of one row (named by its key), in upstream order per subscription, each with
-- whether the row exists after it: its version chain walked back from its latest image (one
-- index lookup per change, whatever the history holds), and the TRUNCATEs of its table that ended
-- it. Rows of a table without a usable key (REPLICA IDENTITY FULL or NOTHING) have no chain and
-- are matched by containment (new_row @> key or old_row @> key), which reads every change row of
-- the table.
CREATE OR REPLACE FUNCTION logical_audit.row_timeline(schema_name text, table_name text, key jsonb,
                                           subscription text DEFAULT NULL)
RETURNS TABLE (change logical_audit.change, row_exists boolean)
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_column
DECLARE
	rel logical_audit.relation;
	head logical_audit.row_image;
	steps logical_audit.change_data[];
	keyed boolean;
	sub_name text;
BEGIN
	IF row_timeline.schema_name IS NULL OR row_timeline.table_name IS NULL THEN
		RAISE EXCEPTION 'schema_name and table_name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF row_timeline.key IS NULL THEN
		RAISE EXCEPTION 'key must not be NULL' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'Name the row by its replica identity key columns, for example ''{"id": 1}''.';
	END IF;
	IF jsonb_typeof(row_timeline.key) <> 'object' THEN
		RAISE EXCEPTION 'key must be a jsonb object, not %', jsonb_typeof(row_timeline.key)
			USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Name the row by its replica identity key columns, for example ''{"id": 1}''.';
	END IF;
	IF row_timeline.key = '{}' THEN
		RAISE EXCEPTION 'key must name at least one column' USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Name the row by its replica identity key columns, for example ''{"id": 1}''.';
	END IF;
	FOR rel IN
		SELECT r.* FROM logical_audit.relation r JOIN logical_audit.store st ON st.subscription_id = r.subscription_id
		WHERE r.schema_name = row_timeline.schema_name AND r.table_name = row_timeline.table_name
		  AND (row_timeline.subscription IS NULL OR st.name = row_timeline.subscription)
		ORDER BY st.name, r.subscription_id
	LOOP
		sub_name := (SELECT st.name FROM logical_audit.store st WHERE st.subscription_id = rel.subscription_id);
		SELECT * INTO head FROM logical_audit.row_image i
		WHERE i.relation_id = rel.id AND i.key_number = logical_audit.row_key_hash(row_timeline.key)
		  AND i.row_key = row_timeline.key;
		keyed := FOUND;
		IF keyed THEN
			steps := ARRAY(SELECT v FROM logical_audit.version_chain(rel.subscription_id, head.commit_time, head.commit_lsn,
			                                                         head.ordinal, row_timeline.key) v);
		ELSIF NOT EXISTS (SELECT FROM logical_audit.row_image i WHERE i.relation_id = rel.id) THEN
			steps := ARRAY(SELECT d FROM logical_audit.change_data d
			               WHERE d.subscription_id = rel.subscription_id AND d.relation_id = rel.id AND d.op <> 'T'
			                 AND (d.new_row @> row_timeline.key OR d.old_row @> row_timeline.key));
		ELSE
			CONTINUE;
		END IF;
		RETURN QUERY
		WITH own AS (SELECT s.* FROM unnest(steps) s),
		truncates AS (
			SELECT (x.d).* FROM logical_audit.relation_truncate t
			CROSS JOIN LATERAL (
				SELECT d FROM logical_audit.change_data d
				WHERE d.subscription_id = rel.subscription_id AND d.commit_time = t.commit_time
				  AND d.commit_lsn = t.commit_lsn AND d.ordinal = t.ordinal LIMIT 1) x
			WHERE t.relation_id = rel.id AND t.commit_lsn >= (SELECT min(o.commit_lsn) FROM own o)),
		steps AS (
			SELECT ROW(u.*)::logical_audit.change_data AS c, CASE WHEN u.op IN ('D', 'T') THEN false
			                    WHEN keyed THEN NOT (u.op = 'U' AND coalesce(u.old_row = row_timeline.key, false))
			                    ELSE coalesce(u.new_row @> row_timeline.key, false)
			               END AS exists_after
			FROM (SELECT * FROM own UNION ALL SELECT * FROM truncates) u),
		ordered AS (
			SELECT s.c, s.exists_after,
			       lag(s.exists_after) OVER (ORDER BY (s.c).commit_lsn, (s.c).ordinal) AS existed_before
			FROM steps s)
		-- A TRUNCATE belongs to the timeline when the row existed just before it.
		SELECT ROW(sub_name, (o.c).commit_lsn, (o.c).ordinal, logical_audit.op_name((o.c).op), rel.schema_name,
		           rel.table_name, (o.c).old_row,
		           CASE WHEN (o.c).unchanged_toast IS NULL THEN (o.c).new_row ELSE logical_audit.complete_row(o.c) END,
		           (o.c).unchanged_toast, (o.c).changed_columns, (o.c).commit_time, (o.c).subscription_id,
		           (o.c).relation_id)::logical_audit.change,
		       o.exists_after
		FROM ordered o
		WHERE (o.c).op <> 'T' OR o.existed_before
		ORDER BY (o.c).commit_lsn, (o.c).ordinal;
	END LOOP;
END
$$;
COMMENT ON FUNCTION logical_audit.row_timeline(text, text, jsonb, text) IS
'the change rows of one row (named by its key), in upstream order per subscription, each with whether the row exists after it';

