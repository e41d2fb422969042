# Option "snapshot": the rows a published table holds when the subscription starts are recorded once,
# as op SNAPSHOT rows of one synthetic transaction (commit_lsn 0/0, xid 0, end_lsn the slot's
# consistent point), each equal to the upstream's to_jsonb of the published columns: column lists
# and row filters (or-ed across publications) are honoured, generated columns left out, a table's
# inheritance children copied under their own name only, and a partitioned table named as the
# stream names it (its root with publish_via_partition_root, else its leaves). Changes made after
# the snapshot are streamed under the same names.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream');

$up->safe_psql('postgres', q{
	CREATE TABLE item (id int PRIMARY KEY, name text, price numeric, tags text[], at timestamptz, doc jsonb);
	CREATE TABLE narrow (id int PRIMARY KEY, shown text, secret text);
	CREATE TABLE regional (id int PRIMARY KEY, region text NOT NULL);
	CREATE TABLE keyless (note text);
	CREATE TABLE full_ident (id int PRIMARY KEY, v int);
	ALTER TABLE full_ident REPLICA IDENTITY FULL;
	CREATE TABLE by_index (code text NOT NULL, n int);
	CREATE UNIQUE INDEX by_index_code ON by_index (code);
	ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
	CREATE TABLE gen (id int PRIMARY KEY, twice int GENERATED ALWAYS AS (id * 2) STORED);
	CREATE TABLE parent (id int PRIMARY KEY, v text);
	CREATE TABLE child (extra int) INHERITS (parent);
	CREATE TABLE shard (id int PRIMARY KEY, v text) PARTITION BY HASH (id);
	CREATE TABLE shard_0 PARTITION OF shard FOR VALUES WITH (MODULUS 2, REMAINDER 0);
	CREATE TABLE shard_1 PARTITION OF shard FOR VALUES WITH (MODULUS 2, REMAINDER 1);
	CREATE TABLE measure (day date, sensor int, v float8, PRIMARY KEY (day, sensor)) PARTITION BY RANGE (day);
	CREATE TABLE measure_2024 PARTITION OF measure FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
	CREATE TABLE measure_2025 PARTITION OF measure FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
	CREATE TABLE unpublished (id int PRIMARY KEY);

	INSERT INTO item VALUES
		(1, 'apple', 1.50, '{red,green}', '2024-03-01 10:00:00+02', '{"origin": ["fr", "it"]}'),
		(2, NULL, 'NaN', '{}', NULL, 'null'),
		(3, 'quote''s "name"', 1e30, NULL, '2024-12-31 23:59:59.999999+00', '[1, 2.5, "x"]');
	INSERT INTO narrow SELECT g, 'shown ' || g, 'secret ' || g FROM generate_series(1, 5) g;
	INSERT INTO regional VALUES (1, 'eu'), (2, 'us'), (3, 'asia'), (4, 'eu');
	INSERT INTO keyless VALUES ('a'), ('a'), (NULL);
	INSERT INTO full_ident VALUES (1, 10), (2, NULL);
	INSERT INTO by_index VALUES ('x', 1), ('y', NULL);
	INSERT INTO gen (id) VALUES (1), (2);
	INSERT INTO parent VALUES (1, 'in parent');
	INSERT INTO child VALUES (2, 'in child', 7);
	INSERT INTO shard SELECT g, 'shard ' || g FROM generate_series(1, 20) g;
	INSERT INTO measure SELECT d, s, s * 0.1 FROM generate_series('2024-11-01'::date, '2025-02-01', '1 month') d,
		generate_series(1, 3) s;
	INSERT INTO unpublished VALUES (1);

	CREATE PUBLICATION audit_pub FOR TABLE item, narrow (id, shown), regional WHERE (region = 'eu'), keyless,
		full_ident, by_index, gen, parent, shard;
	CREATE PUBLICATION more_pub FOR TABLE regional WHERE (region = 'us'), measure
		WITH (publish_via_partition_root = true);
});
my $before = $up->safe_psql('postgres', 'SELECT now()');
create_subscription($down, 'sub', $up, publications => [ 'audit_pub', 'more_pub' ],
	options => '{"snapshot": true}');

# What each audited table's SNAPSHOT rows must equal: the upstream query of its published rows.
my %published = (
	item => 'SELECT * FROM item',
	narrow => 'SELECT id, shown FROM narrow',
	regional => q{SELECT * FROM regional WHERE region IN ('eu', 'us')},
	keyless => 'SELECT * FROM keyless',
	full_ident => 'SELECT * FROM full_ident',
	by_index => 'SELECT * FROM by_index',
	gen => 'SELECT id FROM gen',
	parent => 'SELECT * FROM ONLY parent',
	child => 'SELECT * FROM child',
	shard_0 => 'SELECT * FROM shard_0',
	shard_1 => 'SELECT * FROM shard_1',
	measure => 'SELECT * FROM measure',);

is( $down->safe_psql('postgres', q{
		SELECT string_agg(table_name, ',' ORDER BY table_name) FROM
			(SELECT DISTINCT schema_name || '.' || table_name AS table_name FROM logical_audit.change
			 WHERE op = 'SNAPSHOT') t}),
	join(',', map { "public.$_" } sort keys %published),
	'the published tables are copied under the names the stream uses, the others not');

for my $table (sort keys %published)
{
	my $expected = upstream_value($up, qq{
		SELECT coalesce(jsonb_agg(r ORDER BY r::text COLLATE "C"), '[]')
		FROM (SELECT to_jsonb(x) AS r FROM ($published{$table}) x) s});
	jsonb_is($down, qq{
		SELECT coalesce(jsonb_agg(new_row ORDER BY new_row::text COLLATE "C"), '[]')
		FROM logical_audit.change WHERE op = 'SNAPSHOT' AND table_name = '$table'},
		$expected, "$table: the SNAPSHOT rows are the upstream's published rows");
}

is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.change
		WHERE op = 'SNAPSHOT' AND (old_row IS NOT NULL OR unchanged_toast IS NOT NULL OR changed_columns IS NOT NULL)}),
	'0', 'SNAPSHOT rows have a new row only');

# One synthetic transaction: commit_lsn 0/0, xid 0, end_lsn the consistent point, commit_time the
# upstream's time in the snapshot, its changes numbered 1..n.
my $slot_lsn = $up->safe_psql('postgres',
	"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'");
is( $down->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || min(xid::text) || ' ' || min(commit_lsn::text) || ' '
		       || bool_and(end_lsn > '0/0' AND end_lsn <= '$slot_lsn')
		       || ' ' || bool_and(commit_time >= '$before')
		       || ' ' || min(change_count) || ' ' || (SELECT count(*) || ' ' || max(ordinal)
		                                          FROM logical_audit.change WHERE op = 'SNAPSHOT')
		FROM logical_audit.transaction WHERE subscription = 'sub'}),
	'1 0 0/0 true true 54 54 54',
	'one transaction at commit_lsn 0/0 with xid 0 holds the 54 SNAPSHOT rows, numbered 1..54');

# The replica identity key of each row, where the audit tables record it.
SKIP:
{
	my $has_key = $down->safe_psql('postgres', q{
		SELECT count(*) FROM pg_attribute
		WHERE attrelid = 'logical_audit.change'::regclass AND attname = 'row_key' AND NOT attisdropped});
	skip 'logical_audit.change has no row_key column', 1 unless $has_key;
	my %key = (item => 'id', narrow => 'id', regional => 'id', by_index => 'code', gen => 'id', parent => 'id',
		shard_0 => 'id', shard_1 => 'id', measure => 'day,sensor');
	my $cases = join(' ', map { "WHEN '$_' THEN '{$key{$_}}'" } sort keys %key);
	is( $down->safe_psql('postgres', qq{
			SELECT count(*) FROM logical_audit.change c,
				LATERAL (SELECT CASE c.table_name $cases END::text[] AS names) k
			WHERE op = 'SNAPSHOT' AND row_key IS DISTINCT FROM
				(SELECT jsonb_object_agg(n, c.new_row -> n) FROM unnest(k.names) n)}),
		'0', 'row_key holds the key columns (primary key or identity index), NULL under FULL or with no key');
}

# Changes after the snapshot are streamed, under the same table names.
$up->safe_psql('postgres', q{
	INSERT INTO measure VALUES ('2025-06-01', 9, 1.5);
	INSERT INTO shard VALUES (100, 'after');
	INSERT INTO regional VALUES (5, 'eu');
	UPDATE item SET name = 'pear' WHERE id = 2;
});
wait_for_audit_catchup($up, $down, 'sub');
my $shard_of_100 = $up->safe_psql('postgres', 'SELECT tableoid::regclass FROM shard WHERE id = 100');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(op || ' ' || table_name || ' ' || coalesce(new_row->>'id', new_row->>'sensor'), ', '
		                  ORDER BY commit_lsn, ordinal)
		FROM logical_audit.change WHERE op <> 'SNAPSHOT'}),
	"INSERT measure 9, INSERT $shard_of_100 100, INSERT regional 5, UPDATE item 2",
	'changes after the snapshot are streamed, partitions named as in the snapshot');
is( $down->safe_psql('postgres', q{
		SELECT bool_and(commit_lsn >= (SELECT end_lsn FROM logical_audit.transaction WHERE commit_lsn = '0/0'))
		FROM logical_audit.transaction WHERE commit_lsn <> '0/0'}),
	't', 'streamed transactions commit at or after the consistent point');
is(status_field($down, 'sub', "state || ' ' || transactions || ' ' || changes"),
	'streaming 5 58', 'status counts the snapshot as one transaction of 54 changes');

done_testing();
