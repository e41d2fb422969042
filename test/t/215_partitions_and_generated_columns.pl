# Changes to a partitioned table are audited under the names the publication gives them: with
# publish_via_partition_root false under the leaf partition's schema and name, with true under the
# root's. An UPDATE that moves a row to another partition arrives as a DELETE from one and an
# INSERT into the other. A generated column, which pgoutput does not send, is absent from new_row
# and old_row (not present as NULL).
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
	CREATE SCHEMA parts;
	CREATE TABLE measure (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
	CREATE TABLE measure_north PARTITION OF measure FOR VALUES IN ('north');
	CREATE TABLE parts.measure_south PARTITION OF measure FOR VALUES IN ('south');
	CREATE TABLE gen (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED, b text);
	ALTER TABLE gen REPLICA IDENTITY FULL;
	CREATE PUBLICATION leaf_pub FOR TABLE measure, gen WITH (publish_via_partition_root = false);
	CREATE PUBLICATION root_pub FOR TABLE measure, gen WITH (publish_via_partition_root = true);
});
create_subscription($down, 'leaf_sub', $up, publications => ['leaf_pub']);
create_subscription($down, 'root_sub', $up, publications => ['root_pub']);

$up->safe_psql('postgres', q{
	INSERT INTO measure VALUES (1, 'north', 10), (2, 'south', 20);
	UPDATE measure SET v = 11 WHERE id = 1;
	UPDATE measure SET region = 'south' WHERE id = 1;
	DELETE FROM measure WHERE id = 2;
	TRUNCATE measure;
	INSERT INTO gen (id, a, b) VALUES (1, 5, 'x');
	UPDATE gen SET a = 6;
	DELETE FROM gen;
});
wait_for_audit_catchup($up, $down, $_) for qw(leaf_sub root_sub);

# A subscription's changes in upstream order: "op schema.table old_row new_row" per line.
sub changes
{
	my ($name, $table_like) = @_;
	return $down->safe_psql('postgres', qq{
		SELECT op || ' ' || schema_name || '.' || table_name || ' '
		       || coalesce(old_row::text, '-') || ' ' || coalesce(new_row::text, '-')
		FROM logical_audit.change
		WHERE subscription = '$name' AND table_name LIKE '$table_like'
		ORDER BY commit_lsn, ordinal});
}

is(changes('leaf_sub', 'measure%'), join("\n",
	'INSERT public.measure_north - {"v": 10, "id": 1, "region": "north"}',
	'INSERT parts.measure_south - {"v": 20, "id": 2, "region": "south"}',
	'UPDATE public.measure_north - {"v": 11, "id": 1, "region": "north"}',
	'DELETE public.measure_north {"id": 1, "region": "north"} -',
	'INSERT parts.measure_south - {"v": 11, "id": 1, "region": "south"}',
	'DELETE parts.measure_south {"id": 2, "region": "south"} -',
	'TRUNCATE public.measure_north - -',
	'TRUNCATE parts.measure_south - -'),
	'publish_via_partition_root false: changes are audited under the leaf partitions');

is(changes('root_sub', 'measure%'), join("\n",
	'INSERT public.measure - {"v": 10, "id": 1, "region": "north"}',
	'INSERT public.measure - {"v": 20, "id": 2, "region": "south"}',
	'UPDATE public.measure - {"v": 11, "id": 1, "region": "north"}',
	'DELETE public.measure {"id": 1, "region": "north"} -',
	'INSERT public.measure - {"v": 11, "id": 1, "region": "south"}',
	'DELETE public.measure {"id": 2, "region": "south"} -',
	'TRUNCATE public.measure - -'),
	'publish_via_partition_root true: changes are audited under the root');

my $gen_changes = join("\n",
	'INSERT public.gen - {"a": 5, "b": "x", "id": 1}',
	'UPDATE public.gen {"a": 5, "b": "x", "id": 1} {"a": 6, "b": "x", "id": 1}',
	'DELETE public.gen {"a": 6, "b": "x", "id": 1} -');
is(changes($_, 'gen'), $gen_changes, "$_: a generated column is absent from new_row and old_row")
  for qw(leaf_sub root_sub);
is( $down->safe_psql('postgres',
		q{SELECT count(*) FROM logical_audit.change WHERE table_name = 'gen' AND unchanged_toast IS NOT NULL}),
	'0', 'a generated column is not named as an unsent value either');

done_testing();
