-- logical_audit 1.1 -> 1.2: a store whose cost follows the work of today, not the history it holds.
--
-- The audit rows move into tables partitioned by subscription and then by upstream commit time
-- (change_data, transaction_data, message_data); logical_audit.change, .transaction and .message
-- become views with the columns they had, so every query keeps working. Change rows name their
-- subscription and relation by small ids and point at the previous change of the same row (a
-- version chain): the latest image of each upstream row lives in row_image, a table sized by the
-- upstream tables, and no index of the history takes inserts at random keys. Unchanged TOASTed
-- values are stored once and resolved when read. Old partitions go whole, by retention.
\echo Use "ALTER EXTENSION logical_audit UPDATE TO '1.2'" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Who stored rows belong to: one row per subscription id that ever audited, kept after the
-- subscription is dropped (its rows stay). Retention and legal hold are set per subscription.
CREATE TABLE logical_audit.store (
	subscription_id     integer PRIMARY KEY,
	name                text NOT NULL,
	partition_interval  interval NOT NULL DEFAULT '1 month',
	retention           interval,
	legal_hold          boolean NOT NULL DEFAULT false,
	dropped_at          timestamptz
);
CREATE INDEX store_name ON logical_audit.store (name);

-- The upstream relations each subscription audited, by small id.
CREATE TABLE logical_audit.relation (
	id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	subscription_id  integer NOT NULL,
	schema_name      text COLLATE "C" NOT NULL,
	table_name       text COLLATE "C" NOT NULL,
	UNIQUE (subscription_id, schema_name, table_name)
);

-- One row per change, partitioned by subscription, then by commit time. op: I(NSERT), U(PDATE),
-- D(ELETE), T(RUNCATE), S(NAPSHOT). prev_*: the previous change of the same row under its key
-- (row_key after this change); moved_*: for an UPDATE that changed the key, the previous change
-- under the old key. new_row holds the values the upstream sent: the unchanged TOASTed ones,
-- named in unchanged_toast, are resolved from earlier changes when read.
CREATE TABLE logical_audit.change_data (
	commit_time      timestamptz NOT NULL,
	commit_lsn       pg_lsn NOT NULL,
	subscription_id  integer NOT NULL,
	relation_id      integer NOT NULL,
	ordinal          integer NOT NULL,
	prev_ordinal     integer,
	prev_time        timestamptz,
	prev_lsn         pg_lsn,
	moved_time       timestamptz,
	moved_lsn        pg_lsn,
	moved_ordinal    integer,
	op               "char" NOT NULL CHECK (op IN ('I', 'U', 'D', 'T', 'S')),
	old_row          jsonb COMPRESSION lz4,
	new_row          jsonb COMPRESSION lz4,
	unchanged_toast  text[],
	changed_columns  text[]
) PARTITION BY LIST (subscription_id);
-- A transaction's changes, and each step of a version chain: appended in commit order.
CREATE INDEX change_data_lsn ON logical_audit.change_data (commit_lsn, ordinal);

CREATE TABLE logical_audit.transaction_data (
	commit_time      timestamptz NOT NULL,
	commit_lsn       pg_lsn NOT NULL,
	end_lsn          pg_lsn NOT NULL,
	xid              xid8 NOT NULL,
	audited_at       timestamptz NOT NULL DEFAULT now(),
	prepare_time     timestamptz,
	change_count     bigint NOT NULL,
	subscription_id  integer NOT NULL,
	rolled_back      boolean NOT NULL DEFAULT false,
	origin           text,
	gid              text,
	annotations      jsonb,
	-- A transaction written twice is an error, never a duplicate: its commit time, and so its
	-- partition, is the same each time.
	PRIMARY KEY (commit_lsn, subscription_id, commit_time)
) PARTITION BY LIST (subscription_id);

-- commit_time: its transaction's, or the time a non-transactional message was audited.
CREATE TABLE logical_audit.message_data (
	commit_time      timestamptz NOT NULL,
	lsn              pg_lsn NOT NULL,
	commit_lsn       pg_lsn,
	subscription_id  integer NOT NULL,
	transactional    boolean NOT NULL,
	prefix           text NOT NULL,
	content          bytea NOT NULL,
	PRIMARY KEY (lsn, subscription_id, commit_time)
) PARTITION BY LIST (subscription_id);

-- The TRUNCATEs of each relation (their change rows are in change_data): few, read by history()
-- without a look into every time partition.
CREATE TABLE logical_audit.relation_truncate (
	relation_id  integer NOT NULL,
	commit_lsn   pg_lsn NOT NULL,
	ordinal      integer NOT NULL,
	commit_time  timestamptz NOT NULL,
	PRIMARY KEY (relation_id, commit_lsn, ordinal)
);

-- The latest change of each row seen under a key (row_key_ops, as 1.1's index), and the row's
-- image after it (the values it sent: unchanged TOASTed ones are absent); image is NULL once the
-- change deleted the row or moved it to another key. A TRUNCATE of the relation later than the
-- change ends the row too (relation_truncate).
CREATE TABLE logical_audit.row_image (
	relation_id  integer NOT NULL,
	commit_time  timestamptz NOT NULL,
	commit_lsn   pg_lsn NOT NULL,
	ordinal      integer NOT NULL,
	row_key      jsonb NOT NULL,
	image        jsonb COMPRESSION lz4,
	partial      boolean NOT NULL DEFAULT false  -- the image lacks unchanged TOASTed values
) WITH (fillfactor = 75);
CREATE UNIQUE INDEX row_image_key ON logical_audit.row_image (relation_id, row_key logical_audit.row_key_ops);

SELECT pg_catalog.pg_extension_config_dump('logical_audit.store', '');
SELECT pg_catalog.pg_extension_config_dump('logical_audit.relation', '');
SELECT pg_catalog.pg_extension_config_dump('logical_audit.relation_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('logical_audit.row_image', '');
SELECT pg_catalog.pg_extension_config_dump('logical_audit.relation_truncate', '');

-- Subscriptions enter the store when created and stay there, marked dropped, when dropped.
CREATE FUNCTION logical_audit.store_subscription() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO logical_audit.store (subscription_id, name) VALUES (NEW.id, NEW.name);
		RETURN NEW;
	END IF;
	UPDATE logical_audit.store SET dropped_at = now() WHERE subscription_id = OLD.id;
	RETURN OLD;
END
$$;
CREATE TRIGGER store_subscription AFTER INSERT OR DELETE ON logical_audit.subscription
	FOR EACH ROW EXECUTE FUNCTION logical_audit.store_subscription();

-- ---------------------------------------------------------------------------------------------
-- Partitions. Each subscription has one partition of each table, itself partitioned by commit
-- time in ranges of its partition_interval, aligned on 2000-01-01 UTC (months on month starts,
-- days on midnight UTC). Partitions are created empty and attached, which locks out no reader
-- or writer of the other partitions.

-- The [lower, upper) range of the interval that holds time t, in UTC.
CREATE FUNCTION logical_audit.partition_range(every interval, t timestamptz, OUT lower timestamptz,
                                              OUT upper timestamptz)
LANGUAGE plpgsql IMMUTABLE SET TimeZone = 'UTC'
AS $$
DECLARE
	anchor constant timestamptz := '2000-01-01 00:00:00+00';
	months integer := extract(year FROM every)::integer * 12 + extract(month FROM every)::integer;
	n bigint;
BEGIN
	IF months > 0 THEN
		n := floor(((extract(year FROM t)::integer - 2000) * 12 + extract(month FROM t)::integer - 1)::numeric / months);
		lower := anchor + make_interval(months => (n * months)::integer);
		upper := anchor + make_interval(months => ((n + 1) * months)::integer);
	ELSE
		n := floor(extract(epoch FROM t - anchor) / extract(epoch FROM every));
		lower := anchor + every * n;
		upper := anchor + every * (n + 1);
	END IF;
END
$$;

-- Checks a partition interval: a whole number of months, or of hours (at least one).
CREATE FUNCTION logical_audit.check_partition_interval(every interval) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	months numeric := extract(year FROM every) * 12 + extract(month FROM every);
	rest numeric := extract(epoch FROM every - make_interval(months => months::integer));
BEGIN
	IF every IS NULL OR NOT ((months > 0 AND rest = 0) OR (months = 0 AND rest >= 3600 AND rest % 3600 = 0)) THEN
		RAISE EXCEPTION 'invalid partition interval %', every USING ERRCODE = 'invalid_parameter_value',
			DETAIL = 'A partition interval is a whole number of months, or of hours (at least one).',
			HINT = 'Use an interval such as ''1 month'', ''7 days'' or ''1 day''.';
	END IF;
	RETURN true;
END
$$;
ALTER TABLE logical_audit.store ADD CHECK (logical_audit.check_partition_interval(partition_interval));

-- The time partitions of the audit tables, with their ranges (what users detach, move to another
-- tablespace, or see retention drop).
CREATE VIEW logical_audit.partitions AS
SELECT st.name AS subscription, st.subscription_id, t.kind AS audit_table, leaf.oid::regclass AS partition,
       b.bounds[1]::timestamptz AS from_time, b.bounds[2]::timestamptz AS to_time,
       pg_catalog.pg_total_relation_size(leaf.oid) AS bytes
FROM (VALUES ('change'), ('transaction'), ('message')) AS t(kind)
JOIN pg_catalog.pg_inherits top ON top.inhparent = ('logical_audit.' || t.kind || '_data')::regclass
JOIN pg_catalog.pg_inherits i ON i.inhparent = top.inhrelid
JOIN pg_catalog.pg_class leaf ON leaf.oid = i.inhrelid
JOIN logical_audit.store st
  ON st.subscription_id = substring(pg_catalog.pg_get_expr((SELECT c.relpartbound FROM pg_catalog.pg_class c WHERE c.oid = top.inhrelid), top.inhrelid) FROM '\((\d+)\)')::integer
CROSS JOIN LATERAL (SELECT regexp_match(pg_catalog.pg_get_expr(leaf.relpartbound, leaf.oid),
                                        $re$FROM \('([^']*)'\) TO \('([^']*)'\)$re$) AS bounds) b;

-- Creates the subscription's partition of each audit table if missing, and the time partitions
-- that hold t. Run by the worker (ahead of need, and for a commit time no partition holds).
CREATE FUNCTION logical_audit.create_partitions(subscription_id integer, t timestamptz) RETURNS void
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

-- Keeps one subscription's store: the time partitions for now and the next interval exist, and
-- unless a legal hold suspends it, retention drops each time partition whose whole range is older
-- than the retention (a DROP TABLE of the partition, never a DELETE). Images of rows deleted before
-- the oldest change kept go too. The worker runs it when it connects and every hour.
CREATE FUNCTION logical_audit.maintain_store(subscription_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	st logical_audit.store;
	p record;
	oldest timestamptz;
BEGIN
	SELECT * INTO st FROM logical_audit.store s WHERE s.subscription_id = maintain_store.subscription_id;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	IF st.dropped_at IS NULL THEN
		PERFORM logical_audit.create_partitions(st.subscription_id, now());
		PERFORM logical_audit.create_partitions(st.subscription_id, now() + st.partition_interval);
	END IF;
	IF st.retention IS NULL OR st.legal_hold THEN
		RETURN;
	END IF;
	FOR p IN SELECT * FROM logical_audit.partitions x
	         WHERE x.subscription_id = st.subscription_id AND x.to_time <= now() - st.retention LOOP
		EXECUTE format('DROP TABLE %s', p.partition);
	END LOOP;
	oldest := (SELECT min(x.from_time) FROM logical_audit.partitions x
	           WHERE x.subscription_id = st.subscription_id AND x.audit_table = 'change');
	DELETE FROM logical_audit.row_image i USING logical_audit.relation r
	WHERE r.subscription_id = st.subscription_id AND i.relation_id = r.id AND i.image IS NULL
	  AND i.commit_time < coalesce(oldest, 'infinity');
	DELETE FROM logical_audit.relation_truncate t USING logical_audit.relation r
	WHERE r.subscription_id = st.subscription_id AND t.relation_id = r.id
	  AND t.commit_time < coalesce(oldest, 'infinity');
END
$$;

-- Keeps the store of the named subscription (of each one when NULL), as its worker does hourly:
-- for a stopped or dropped subscription, or from a scheduler.
CREATE FUNCTION logical_audit.maintain(subscription text DEFAULT NULL) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
	SELECT logical_audit.maintain_store(s.subscription_id) FROM logical_audit.store s
	WHERE maintain.subscription IS NULL OR s.name = maintain.subscription;
$$;

-- The store rows of a subscription name (every id that audited under it); none is an error.
CREATE FUNCTION logical_audit.store_of(subscription text) RETURNS SETOF logical_audit.store
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY SELECT * FROM logical_audit.store s WHERE s.name = store_of.subscription;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'subscription "%" has no audit store', subscription USING ERRCODE = 'undefined_object';
	END IF;
END
$$;

-- How long the subscription's audit rows are kept (NULL: for ever). Retention drops whole time
-- partitions once their range is older than this; it takes effect at the next maintenance.
CREATE FUNCTION logical_audit.set_retention(subscription text, retention interval) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF retention IS NOT NULL AND retention <= interval '0' THEN
		RAISE EXCEPTION 'retention must be positive' USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Give NULL to keep the audit rows for ever.';
	END IF;
	UPDATE logical_audit.store s SET retention = set_retention.retention
	WHERE s.subscription_id IN (SELECT x.subscription_id FROM logical_audit.store_of(subscription) x);
END
$$;

-- A legal hold suspends retention for the subscription's audit rows until it is lifted.
CREATE FUNCTION logical_audit.set_legal_hold(subscription text, hold boolean) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE logical_audit.store s SET legal_hold = coalesce(set_legal_hold.hold, false)
	WHERE s.subscription_id IN (SELECT x.subscription_id FROM logical_audit.store_of(set_legal_hold.subscription) x);
$$;

-- The range of the time partitions made from now on (partitions made before keep theirs).
CREATE FUNCTION logical_audit.set_partition_interval(subscription text, every interval) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM logical_audit.check_partition_interval(every);
	UPDATE logical_audit.store s SET partition_interval = every
	WHERE s.subscription_id IN (SELECT x.subscription_id FROM logical_audit.store_of(subscription) x);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Reading the store.

-- The change rows of one row's version chain, from the change at (commit_time, commit_lsn,
-- ordinal) back to its first, following the link under the old key where an UPDATE moved the row
-- away from key: one index lookup in one time partition per change, in C.
CREATE FUNCTION logical_audit.version_chain(subscription_id integer, commit_time timestamptz, commit_lsn pg_lsn,
                                            ordinal integer, key jsonb)
RETURNS SETOF logical_audit.change_data
AS 'MODULE_PATHNAME', 'logical_audit_version_chain'
LANGUAGE C STABLE STRICT;

-- The change that precedes a change in its row's lineage: under the old key for an UPDATE that
-- changed the key, else under its key.
CREATE FUNCTION logical_audit.lineage_prev(c logical_audit.change_data) RETURNS logical_audit.change_data
LANGUAGE sql STABLE
AS $$
	SELECT p FROM logical_audit.change_data p
	WHERE p.subscription_id = c.subscription_id
	  AND p.commit_time = coalesce(c.moved_time, c.prev_time)
	  AND p.commit_lsn = coalesce(c.moved_lsn, c.prev_lsn)
	  AND p.ordinal = coalesce(c.moved_ordinal, c.prev_ordinal)
$$;

-- A change's new_row with its unchanged TOASTed values (unchanged_toast) taken from its full old
-- row, else from the earlier changes of the row that sent them; a value no kept change sent stays
-- absent.
CREATE FUNCTION logical_audit.complete_row(c logical_audit.change_data) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	result jsonb := c.new_row;
	missing text[] := ARRAY(SELECT m FROM unnest(c.unchanged_toast) m WHERE NOT c.new_row ? m);
	p logical_audit.change_data := c;
	source jsonb := c.old_row; -- a full old row (REPLICA IDENTITY FULL) holds them all
	found_values jsonb;
BEGIN
	WHILE result IS NOT NULL AND cardinality(missing) > 0 LOOP
		IF source IS NULL THEN
			p := logical_audit.lineage_prev(p);
			EXIT WHEN p.commit_lsn IS NULL;
			source := p.new_row;
		END IF;
		SELECT jsonb_object_agg(e.key, e.value) INTO found_values
		FROM jsonb_each(source) e WHERE e.key = ANY (missing) AND e.value <> 'null';
		source := NULL;
		IF found_values IS NOT NULL THEN
			result := found_values || result;
			missing := ARRAY(SELECT m FROM unnest(missing) m WHERE NOT found_values ? m);
		END IF;
	END LOOP;
	RETURN result;
END
$$;

CREATE FUNCTION logical_audit.op_name("char") RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE $1 WHEN 'I' THEN 'INSERT' WHEN 'U' THEN 'UPDATE' WHEN 'D' THEN 'DELETE' WHEN 'T' THEN 'TRUNCATE'
               WHEN 'S' THEN 'SNAPSHOT' END;

-- ---------------------------------------------------------------------------------------------
-- The 1.1 rows move into the new tables. Change rows take their transaction's commit time (the
-- time of the upgrade for a row without one, and for non-transactional messages, which had none).
INSERT INTO logical_audit.store (subscription_id, name) SELECT s.id, s.name FROM logical_audit.subscription s;
INSERT INTO logical_audit.store (subscription_id, name, dropped_at)
SELECT nextval(pg_catalog.pg_get_serial_sequence('logical_audit.subscription', 'id')), n.name, now()
FROM (SELECT t.subscription AS name FROM logical_audit.transaction t
      UNION SELECT c.subscription FROM logical_audit.change c
      UNION SELECT m.subscription FROM logical_audit.message m) n
WHERE n.name NOT IN (SELECT s.name FROM logical_audit.subscription s);

INSERT INTO logical_audit.relation (subscription_id, schema_name, table_name)
SELECT DISTINCT st.subscription_id, c.schema_name, c.table_name
FROM logical_audit.change c JOIN logical_audit.store st ON st.name = c.subscription;

SELECT logical_audit.create_partitions(x.subscription_id, x.commit_time)
FROM (SELECT DISTINCT ON (u.subscription_id, (logical_audit.partition_range(st.partition_interval, u.commit_time)).lower)
             u.subscription_id, u.commit_time
      FROM (SELECT st.subscription_id, t.commit_time
            FROM logical_audit.transaction t JOIN logical_audit.store st ON st.name = t.subscription
            UNION ALL SELECT subscription_id, now() FROM logical_audit.store) u
      JOIN logical_audit.store st USING (subscription_id)) x;

INSERT INTO logical_audit.transaction_data (commit_time, commit_lsn, end_lsn, xid, audited_at, prepare_time,
                                            change_count, subscription_id, rolled_back, origin, gid, annotations)
SELECT t.commit_time, t.commit_lsn, t.end_lsn, t.xid, t.audited_at, t.prepare_time, t.change_count,
       st.subscription_id, t.rolled_back, t.origin, t.gid, t.annotations
FROM logical_audit.transaction t JOIN logical_audit.store st ON st.name = t.subscription;

INSERT INTO logical_audit.message_data (commit_time, lsn, commit_lsn, subscription_id, transactional, prefix, content)
SELECT coalesce(t.commit_time, now()), m.lsn, m.commit_lsn, st.subscription_id, m.transactional, m.prefix, m.content
FROM logical_audit.message m JOIN logical_audit.store st ON st.name = m.subscription
LEFT JOIN logical_audit.transaction t ON t.subscription = m.subscription AND t.commit_lsn = m.commit_lsn;

-- Each keyed change in the timelines it belongs to: its key's, and for an UPDATE that changed the
-- key, the old key's as well; its predecessor in each is the one before it there.
WITH upgrade_change AS (
	SELECT coalesce(t.commit_time, now()) AS commit_time, c.commit_lsn, st.subscription_id, r.id AS relation_id,
	       c.ordinal, c.op, c.row_key, c.old_row, c.new_row, c.unchanged_toast, c.changed_columns
	FROM logical_audit.change c
	JOIN logical_audit.store st ON st.name = c.subscription
	JOIN logical_audit.relation r ON r.subscription_id = st.subscription_id AND r.schema_name = c.schema_name
	                             AND r.table_name = c.table_name
	LEFT JOIN logical_audit.transaction t ON t.subscription = c.subscription AND t.commit_lsn = c.commit_lsn),
upgrade_timeline AS (
	SELECT e.*, lag(e.commit_time) OVER w AS p_time, lag(e.commit_lsn) OVER w AS p_lsn, lag(e.ordinal) OVER w AS p_ordinal,
	       row_number() OVER (PARTITION BY e.relation_id, e.key ORDER BY e.commit_lsn DESC, e.ordinal DESC) AS from_last
	FROM (SELECT c.relation_id, c.row_key AS key, false AS moved, c.commit_time, c.commit_lsn, c.ordinal, c.op, c.new_row
	      FROM upgrade_change c WHERE c.row_key IS NOT NULL
	      UNION ALL
	      SELECT c.relation_id, c.old_row, true, c.commit_time, c.commit_lsn, c.ordinal, c.op, c.new_row
	      FROM upgrade_change c WHERE c.op = 'UPDATE' AND c.row_key IS NOT NULL AND c.old_row <> c.row_key) e
	WINDOW w AS (PARTITION BY e.relation_id, e.key ORDER BY e.commit_lsn, e.ordinal)),
images AS (
	INSERT INTO logical_audit.row_image (relation_id, commit_time, commit_lsn, ordinal, row_key, image, partial)
	SELECT e.relation_id, e.commit_time, e.commit_lsn, e.ordinal, e.key,
	       CASE WHEN NOT e.moved AND e.op <> 'DELETE' THEN e.new_row END, false
	FROM upgrade_timeline e WHERE e.from_last = 1)
INSERT INTO logical_audit.change_data (commit_time, commit_lsn, subscription_id, relation_id, ordinal, prev_ordinal,
                                       prev_time, prev_lsn, moved_time, moved_lsn, moved_ordinal, op, old_row, new_row,
                                       unchanged_toast, changed_columns)
SELECT c.commit_time, c.commit_lsn, c.subscription_id, c.relation_id, c.ordinal, own.p_ordinal, own.p_time, own.p_lsn,
       old.p_time, old.p_lsn, old.p_ordinal,
       CASE c.op WHEN 'INSERT' THEN 'I' WHEN 'UPDATE' THEN 'U' WHEN 'DELETE' THEN 'D' WHEN 'TRUNCATE' THEN 'T' ELSE 'S' END,
       c.old_row, c.new_row, c.unchanged_toast, c.changed_columns
FROM upgrade_change c
LEFT JOIN upgrade_timeline own ON NOT own.moved AND own.relation_id = c.relation_id AND own.commit_lsn = c.commit_lsn
                               AND own.ordinal = c.ordinal
LEFT JOIN upgrade_timeline old ON old.moved AND old.relation_id = c.relation_id AND old.commit_lsn = c.commit_lsn
                               AND old.ordinal = c.ordinal;

INSERT INTO logical_audit.relation_truncate (relation_id, commit_lsn, ordinal, commit_time)
SELECT d.relation_id, d.commit_lsn, d.ordinal, d.commit_time FROM logical_audit.change_data d WHERE d.op = 'T';

DROP FUNCTION logical_audit.row_as_of(text, text, jsonb, timestamptz, text);
DROP FUNCTION logical_audit.history(text, text, jsonb, text);
DROP FUNCTION logical_audit.row_timeline(text, text, jsonb, text);
DROP TABLE logical_audit.change, logical_audit.transaction, logical_audit.message;

-- ---------------------------------------------------------------------------------------------
-- The audit tables as users query them: 1.1's columns (row_key aside), and commit_time.
CREATE VIEW logical_audit.transaction AS
SELECT st.name AS subscription, t.xid, t.commit_lsn, t.end_lsn, t.commit_time, t.origin, t.change_count,
       t.annotations, t.audited_at, t.gid, t.prepare_time, t.rolled_back, t.subscription_id
FROM logical_audit.transaction_data t JOIN logical_audit.store st ON st.subscription_id = t.subscription_id;

CREATE VIEW logical_audit.change AS
SELECT st.name AS subscription, c.commit_lsn, c.ordinal, logical_audit.op_name(c.op) AS op, r.schema_name,
       r.table_name, c.old_row,
       CASE WHEN c.unchanged_toast IS NULL THEN c.new_row ELSE logical_audit.complete_row(c) END AS new_row,
       c.unchanged_toast, c.changed_columns, c.commit_time, c.subscription_id, c.relation_id
FROM logical_audit.change_data c
JOIN logical_audit.store st ON st.subscription_id = c.subscription_id
JOIN logical_audit.relation r ON r.id = c.relation_id;

CREATE VIEW logical_audit.message AS
SELECT st.name AS subscription, m.lsn, m.commit_lsn, m.transactional, m.prefix, m.content, m.commit_time,
       m.subscription_id
FROM logical_audit.message_data m JOIN logical_audit.store st ON st.subscription_id = m.subscription_id;


-- The change rows of one row (named by its key), in upstream order per subscription, each with
-- whether the row exists after it: its version chain walked back from its latest image (one
-- index lookup per change, whatever the history holds), and the TRUNCATEs of its table that ended
-- it. Rows of a table without a usable key (REPLICA IDENTITY FULL or NOTHING) have no chain and
-- are matched by containment (new_row @> key or old_row @> key), which reads every change row of
-- the table.
CREATE FUNCTION logical_audit.row_timeline(schema_name text, table_name text, key jsonb,
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
		SELECT * INTO head FROM logical_audit.row_image i WHERE i.relation_id = rel.id AND i.row_key = row_timeline.key;
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

CREATE FUNCTION logical_audit.history(schema_name text, table_name text, key jsonb, subscription text DEFAULT NULL)
RETURNS TABLE (subscription text, commit_lsn pg_lsn, ordinal integer, commit_time timestamptz, xid xid8,
               origin text, op text, old_row jsonb, new_row jsonb, changed_columns text[],
               unchanged_toast text[], annotations jsonb)
LANGUAGE sql STABLE
AS $$
	-- Each change's transaction by its primary key, one lookup per change (a lateral subquery: the
	-- planner may not turn it into a join over every transaction row).
	SELECT (r.change).subscription, (r.change).commit_lsn, (r.change).ordinal, (r.change).commit_time, t.xid, t.origin,
	       (r.change).op, (r.change).old_row, (r.change).new_row, (r.change).changed_columns,
	       (r.change).unchanged_toast, t.annotations
	FROM logical_audit.row_timeline(history.schema_name, history.table_name, history.key, history.subscription) r
	LEFT JOIN LATERAL (
		SELECT x.xid, x.origin, x.annotations FROM logical_audit.transaction_data x
		WHERE x.commit_lsn = (r.change).commit_lsn AND x.subscription_id = (r.change).subscription_id
		  AND x.commit_time = (r.change).commit_time
		LIMIT 1) t ON true
	ORDER BY (r.change).subscription, (r.change).subscription_id, (r.change).commit_lsn, (r.change).ordinal
$$;
COMMENT ON FUNCTION logical_audit.history(text, text, jsonb, text) IS
'every audited change of one row (named by its key) with its transaction, in upstream commit order per subscription';

CREATE FUNCTION logical_audit.row_as_of(schema_name text, table_name text, key jsonb, at timestamptz,
                                        subscription text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_column
DECLARE
	latest record;
	found_in text;
	result jsonb;
BEGIN
	IF row_as_of.at IS NULL THEN
		RAISE EXCEPTION 'at must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- The row's latest change committed at or before "at", in each subscription that audited it.
	FOR latest IN
		SELECT DISTINCT ON ((r.change).subscription) (r.change).subscription AS name, r.row_exists,
		       (r.change).new_row AS new_row
		FROM logical_audit.row_timeline(row_as_of.schema_name, row_as_of.table_name, row_as_of.key,
		                                row_as_of.subscription) r
		WHERE (r.change).commit_time <= row_as_of.at
		ORDER BY (r.change).subscription, (r.change).commit_lsn DESC, (r.change).ordinal DESC
	LOOP
		IF found_in IS NOT NULL THEN
			RAISE EXCEPTION 'row % of %.% was audited by more than one subscription', row_as_of.key,
				row_as_of.schema_name, row_as_of.table_name
				USING ERRCODE = 'cardinality_violation',
				DETAIL = format('Subscriptions %s and %s both audited changes of the row.', quote_literal(found_in),
				                quote_literal(latest.name)),
				HINT = 'Name the subscription whose audit to read.';
		END IF;
		found_in := latest.name;
		result := CASE WHEN latest.row_exists THEN latest.new_row END;
	END LOOP;
	RETURN result;
END
$$;
COMMENT ON FUNCTION logical_audit.row_as_of(text, text, jsonb, timestamptz, text) IS
'one row (named by its key) as it was at an upstream commit time: the new_row of its latest change then, NULL when it did not exist';

-- The whole table as it was at an upstream commit time: each row that existed then.
-- A row unchanged since comes from its latest image; a row changed since, from the change that
-- preceded its first change after "at" (so the cost follows the table's size and the changes
-- since "at", not the history before). Only tables whose rows have a key have an image.
CREATE FUNCTION logical_audit.table_as_of(schema_name text, table_name text, at timestamptz,
                                          subscription text DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_column
DECLARE
	rel logical_audit.relation;
	found_in text;
	truncated pg_lsn;
	truncated_ordinal integer;
BEGIN
	IF table_as_of.schema_name IS NULL OR table_as_of.table_name IS NULL OR table_as_of.at IS NULL THEN
		RAISE EXCEPTION 'schema_name, table_name and at must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	FOR rel IN
		SELECT r.* FROM logical_audit.relation r JOIN logical_audit.store st ON st.subscription_id = r.subscription_id
		WHERE r.schema_name = table_as_of.schema_name AND r.table_name = table_as_of.table_name
		  AND (table_as_of.subscription IS NULL OR st.name = table_as_of.subscription)
	LOOP
		IF found_in IS NOT NULL AND found_in <> (SELECT st.name FROM logical_audit.store st WHERE st.subscription_id = rel.subscription_id) THEN
			RAISE EXCEPTION 'table %.% was audited by more than one subscription', table_as_of.schema_name,
				table_as_of.table_name USING ERRCODE = 'cardinality_violation',
				HINT = 'Name the subscription whose audit to read.';
		END IF;
		found_in := (SELECT st.name FROM logical_audit.store st WHERE st.subscription_id = rel.subscription_id);
		IF NOT EXISTS (SELECT FROM logical_audit.row_image i WHERE i.relation_id = rel.id) THEN
			IF EXISTS (SELECT FROM logical_audit.change_data d WHERE d.subscription_id = rel.subscription_id
			           AND d.relation_id = rel.id AND d.op <> 'T') THEN
				RAISE EXCEPTION 'table %.% has no row key', table_as_of.schema_name, table_as_of.table_name
					USING ERRCODE = 'feature_not_supported',
					DETAIL = 'Its rows were audited under REPLICA IDENTITY FULL or NOTHING, which name no row.',
					HINT = 'Query logical_audit.change for the table instead.';
			END IF;
			CONTINUE;
		END IF;
		SELECT t.commit_lsn, t.ordinal INTO truncated, truncated_ordinal FROM logical_audit.relation_truncate t
		WHERE t.relation_id = rel.id AND t.commit_time <= table_as_of.at
		ORDER BY t.commit_lsn DESC, t.ordinal DESC LIMIT 1;
		RETURN QUERY
		WITH later AS (
			SELECT d.* FROM logical_audit.change_data d
			WHERE d.subscription_id = rel.subscription_id AND d.relation_id = rel.id AND d.commit_time > table_as_of.at
			  AND d.op <> 'T'),
		-- The latest change at or before "at" of each row changed since (through either link of a
		-- key-changing UPDATE); a change that moved the row away from the key it was reached by
		-- left no row there. Each link is followed by its own lookup (a lateral subquery).
		before AS (
			SELECT DISTINCT ON ((x.p).commit_lsn, (x.p).ordinal) x.p
			FROM later c
			CROSS JOIN LATERAL (VALUES (c.prev_time, c.prev_lsn, c.prev_ordinal, false),
			                           (c.moved_time, c.moved_lsn, c.moved_ordinal, true)) AS l(t, lsn, ord, via_moved)
			CROSS JOIN LATERAL (
				SELECT p FROM logical_audit.change_data p
				WHERE p.subscription_id = rel.subscription_id AND p.commit_time = l.t AND p.commit_lsn = l.lsn
				  AND p.ordinal = l.ord
				LIMIT 1) x
			WHERE l.t <= table_as_of.at
			  AND (l.via_moved OR NOT ((x.p).op = 'U' AND (x.p).old_row IS NOT NULL
			                           AND coalesce(c.new_row @> (x.p).old_row, c.old_row = (x.p).old_row, false)))),
		states AS (
			SELECT (b.p).commit_lsn AS lsn, (b.p).ordinal AS ord, (b.p).op AS op,
			       CASE WHEN (b.p).unchanged_toast IS NULL THEN (b.p).new_row ELSE logical_audit.complete_row(b.p) END AS r
			FROM before b
			UNION ALL
			-- A partial image is completed from its change, looked up for it alone.
			SELECT i.commit_lsn, i.ordinal, 'I',
			       CASE WHEN i.partial THEN
			           (SELECT logical_audit.complete_row(d) FROM logical_audit.change_data d
			            WHERE d.subscription_id = rel.subscription_id AND d.commit_time = i.commit_time
			              AND d.commit_lsn = i.commit_lsn AND d.ordinal = i.ordinal)
			       ELSE i.image END
			FROM logical_audit.row_image i
			WHERE i.relation_id = rel.id AND i.commit_time <= table_as_of.at AND i.image IS NOT NULL)
		SELECT s.r FROM states s
		WHERE s.op IN ('I', 'U', 'S') AND s.r IS NOT NULL
		  AND (truncated IS NULL OR (s.lsn, s.ord) > (truncated, truncated_ordinal));
	END LOOP;
END
$$;
COMMENT ON FUNCTION logical_audit.table_as_of(text, text, timestamptz, text) IS
'every row of an upstream table as it was at an upstream commit time';

REVOKE ALL ON logical_audit.store, logical_audit.relation, logical_audit.row_image, logical_audit.relation_truncate,
	logical_audit.change_data,
	logical_audit.transaction_data, logical_audit.message_data FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.create_partitions(integer, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.maintain_store(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.maintain(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.set_retention(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.set_legal_hold(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.set_partition_interval(text, interval) FROM PUBLIC;
