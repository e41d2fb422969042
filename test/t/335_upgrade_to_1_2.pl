# An installation of 1.0 (and so of 1.1) is brought to the 1.2 store by ALTER EXTENSION UPDATE:
# the rows audited before stay and answer history(); until the update the worker, which writes
# the 1.2 store, stops with an error that says so and confirms nothing, and after it the changes
# made upstream meanwhile are audited, exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream', version => '1.0');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text, doc text);
	ALTER TABLE t ALTER doc SET STORAGE EXTERNAL;
	INSERT INTO t VALUES (1, 'b', repeat('x', 3000));
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
create_subscription($down, 'sub', $up, wait => 0);

# Rows as the 1.0 module recorded them: row 1 inserted with a large value, then updated without it
# (its unchanged TOAST value back-filled, as 1.0 did).
my $big = 'x' x 3000;
$down->safe_psql('postgres', qq{
	INSERT INTO logical_audit.transaction (subscription, xid, commit_lsn, end_lsn, commit_time, change_count)
	VALUES ('sub', '701', '0/100', '0/110', '2024-01-01 10:00+00', 1), ('sub', '702', '0/200', '0/210', '2024-02-01 10:00+00', 1);
	INSERT INTO logical_audit.change (subscription, commit_lsn, ordinal, op, schema_name, table_name, row_key, new_row,
	                                  unchanged_toast, changed_columns)
	VALUES ('sub', '0/100', 1, 'INSERT', 'public', 't', '{"id": 1}', '{"id": 1, "v": "a", "doc": "$big"}', NULL, NULL),
	       ('sub', '0/200', 1, 'UPDATE', 'public', 't', '{"id": 1}', '{"id": 1, "v": "b", "doc": "$big"}', '{doc}', '{v}');
});

# Upstream changes while the extension is old: the worker refuses to record them.
$up->safe_psql('postgres', q{UPDATE t SET v = 'c' WHERE id = 1});
$up->safe_psql('postgres', qq{INSERT INTO t VALUES (2, 'z', '$big')});
poll_until($down, q{SELECT last_error LIKE '%older than its module%' FROM logical_audit.status}, 't',
	'before the update the worker stops with an error naming the cause');
is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.change WHERE commit_lsn > '0/200'}), '0',
	'nothing was recorded meanwhile');

update_extension($down);
$down->safe_psql('postgres', q{SELECT logical_audit.start('sub')});
$up->safe_psql('postgres', q{UPDATE t SET v = 'd' WHERE id = 2});
wait_for_audit_catchup($up, $down, 'sub');

is( $down->safe_psql('postgres', q{
		SELECT string_agg(op || ' ' || (new_row->>'v') || ' ' || length(new_row->>'doc')
		                  || ' ' || coalesce(array_to_string(changed_columns, ','), '-'), E'\n' ORDER BY commit_lsn, ordinal)
		FROM logical_audit.history('public', 't', '{"id": 1}')}),
	"INSERT a 3000 -\nUPDATE b 3000 v\nUPDATE c 3000 v",
	'history() spans the rows audited before the update and after it; the TOAST value resolves across both');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(op || ' ' || (new_row->>'v') || ' ' || length(new_row->>'doc'), E'\n' ORDER BY commit_lsn, ordinal)
		FROM logical_audit.history('public', 't', '{"id": 2}')}),
	"INSERT z 3000\nUPDATE d 3000", 'the changes made upstream before the update are audited after it');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.change_data WHERE op = 'U' AND new_row ? 'doc' AND commit_lsn > '0/200'}),
	'0', 'an unchanged TOAST value is not stored again');
is( $down->safe_psql('postgres', q{SELECT logical_audit.row_as_of('public', 't', '{"id": 1}', '2024-01-15')->>'v'}),
	'a', 'row_as_of() answers over the migrated rows');
is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.change WHERE commit_lsn > '0/200'}), '3',
	'each upstream change once');

done_testing();
