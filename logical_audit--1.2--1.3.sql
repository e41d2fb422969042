-- logical_audit 1.2 -> 1.3: the latest-image store found by a hash of the row key.
--
-- row_image's index compared jsonb keys at every step of every descent: each change the worker
-- records looks its row up and most write it. The index now holds a 64-bit number per key after
-- the relation id (row_key_hash: the key's integer when it is one integral number, so rows
-- numbered in order are filed in order; jsonb's own hash otherwise; equal for keys jsonb calls
-- equal); a lookup compares integers and checks the key of the rows it finds. Nothing else of
-- the store changes.
\echo Use "ALTER EXTENSION logical_audit UPDATE TO '1.3'" to load this file. \quit

CREATE FUNCTION logical_audit.row_key_hash(jsonb) RETURNS bigint
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'logical_audit_row_key_hash';
COMMENT ON FUNCTION logical_audit.row_key_hash(jsonb) IS
'the number row_image''s index files a row key under: the key''s integer when it is one integral number, else a hash';

DROP INDEX logical_audit.row_image_key;
-- Not unique: two keys may share a number. The worker, the only writer, keeps one row per key.
CREATE INDEX row_image_key_hash ON logical_audit.row_image (relation_id, logical_audit.row_key_hash(row_key));

-- Nothing uses the jsonb key order of 1.0's indexes any more.
DROP OPERATOR FAMILY logical_audit.row_key_ops USING btree;
DROP OPERATOR logical_audit.~<~ (jsonb, jsonb);
DROP FUNCTION logical_audit.row_key_lt(jsonb, jsonb);
DROP FUNCTION logical_audit.row_key_cmp(jsonb, jsonb);

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
		WHERE i.relation_id = rel.id AND logical_audit.row_key_hash(i.row_key) = logical_audit.row_key_hash(row_timeline.key)
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

