# An installation of 1.2 is brought to 1.3 (row images found by a hash of the key) by ALTER
# EXTENSION UPDATE: the images of 1.2 are found under the new index, so the changes audited after
# the update link to the rows audited before it and complete their changed_columns from them, and
# history() and row_as_of() answer across both.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream', version => '1.2');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t VALUES (1, 'b');
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
create_subscription($down, 'sub', $up, wait => 0);

# Rows as the 1.2 module recorded them: row 1 inserted, then updated, and its latest image.
$down->safe_psql('postgres', q{
	CREATE TEMP TABLE ids AS
	SELECT s.id AS sub FROM logical_audit.subscription s WHERE s.name = 'sub';
	INSERT INTO logical_audit.relation (subscription_id, schema_name, table_name) SELECT sub, 'public', 't' FROM ids;
	ALTER TABLE ids ADD rel int;
	UPDATE ids SET rel = (SELECT id FROM logical_audit.relation WHERE table_name = 't');
	SELECT logical_audit.create_partitions(sub, at) FROM ids, (VALUES ('2024-01-01 10:00+00'::timestamptz),
	                                                                   ('2024-02-01 10:00+00')) a(at);
	INSERT INTO logical_audit.transaction_data (commit_time, commit_lsn, end_lsn, xid, audited_at, change_count,
	                                            subscription_id)
	SELECT at, lsn, lsn + 16, xid::xid8, at, 1, sub
	FROM ids, (VALUES ('2024-01-01 10:00+00'::timestamptz, '0/100'::pg_lsn, '701'),
	                  ('2024-02-01 10:00+00', '0/200', '702')) a(at, lsn, xid);
	INSERT INTO logical_audit.change_data (commit_time, commit_lsn, subscription_id, relation_id, ordinal,
	                                       prev_ordinal, prev_time, prev_lsn, op, new_row, changed_columns)
	SELECT at, lsn, sub, rel, 1, prev_ordinal, prev_time, prev_lsn, op, new_row, changed_columns
	FROM ids, (VALUES ('2024-01-01 10:00+00'::timestamptz, '0/100'::pg_lsn, NULL::int, NULL::timestamptz,
	                   NULL::pg_lsn, 'I'::"char", '{"id": 1, "v": "a"}'::jsonb, NULL::text[]),
	                  ('2024-02-01 10:00+00', '0/200', 1, '2024-01-01 10:00+00', '0/100', 'U', '{"id": 1, "v": "b"}',
	                   '{v}')) c(at, lsn, prev_ordinal, prev_time, prev_lsn, op, new_row, changed_columns);
	INSERT INTO logical_audit.row_image (relation_id, commit_time, commit_lsn, ordinal, row_key, image, partial)
	SELECT rel, '2024-02-01 10:00+00', '0/200', 1, '{"id": 1}', '{"id": 1, "v": "b"}', false FROM ids;
});

$up->safe_psql('postgres', q{UPDATE t SET v = 'c' WHERE id = 1});
poll_until($down, q{SELECT last_error LIKE '%older than its module%' FROM logical_audit.status}, 't',
	'before the update the worker stops with an error naming the cause');

update_extension($down);
$down->safe_psql('postgres', q{SELECT logical_audit.start('sub')});
$up->safe_psql('postgres', q{INSERT INTO t VALUES (2, 'z'); UPDATE t SET v = 'y' WHERE id = 2});
wait_for_audit_catchup($up, $down, 'sub');

is( $down->safe_psql('postgres', q{
		SELECT string_agg(op || ' ' || (new_row->>'v') || ' ' || coalesce(array_to_string(changed_columns, ','), '-'),
		                  E'\n' ORDER BY commit_lsn, ordinal)
		FROM logical_audit.history('public', 't', '{"id": 1}')}),
	"INSERT a -\nUPDATE b v\nUPDATE c v",
	'the change audited after the update follows the chain of the rows audited before it');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(op || ' ' || (new_row->>'v'), E'\n' ORDER BY commit_lsn, ordinal)
		FROM logical_audit.history('public', 't', '{"id": 2}')}),
	"INSERT z\nUPDATE y", 'a row first audited after the update has its history');
is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.row_image}), '2', 'one image per row');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM pg_index WHERE indrelid IN ('logical_audit.change_data'::regclass,
		       'logical_audit.transaction_data'::regclass, 'logical_audit.message_data'::regclass)}),
	'0', 'the extension\'s partitioned tables carry no index after the update');
is( $down->safe_psql('postgres', q{
		SELECT count(DISTINCT p.partition) FROM logical_audit.partitions p JOIN pg_index i ON i.indrelid = p.partition
		WHERE p.from_time < '2024-03-01'}),
	'6', 'every time partition of before the update keeps its index');
is( $down->safe_psql('postgres', q{SELECT logical_audit.row_as_of('public', 't', '{"id": 1}', '2024-01-15')->>'v'}),
	'a', 'row_as_of() answers over the rows audited before the update');

done_testing();
