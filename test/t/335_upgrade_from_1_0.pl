# An installation of version 1.0 keeps auditing with the new module and, after ALTER EXTENSION
# UPDATE, answers as before: the audit rows, history(), status with its new columns, and the
# changes that follow.
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
	CREATE TABLE t (id int PRIMARY KEY, v text);
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
create_subscription($down, 'sub', $up);
$up->safe_psql('postgres', q{INSERT INTO t VALUES (1, 'a'); UPDATE t SET v = 'b' WHERE id = 1});
wait_for_audit_catchup($up, $down, 'sub');
is($down->safe_psql('postgres', q{SELECT state, lag_bytes >= 0 FROM logical_audit.status}), 'streaming|t',
	'version 1.0 status answers with the new module');

$down->safe_psql('postgres', 'ALTER EXTENSION logical_audit UPDATE');
is($down->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'logical_audit'}), '1.1',
	'ALTER EXTENSION UPDATE reaches 1.1');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(op || ' ' || new_row::text, ', ' ORDER BY commit_lsn, ordinal)
		FROM logical_audit.history('public', 't', '{"id": 1}')}),
	'INSERT {"v": "a", "id": 1}, UPDATE {"v": "b", "id": 1}', 'history() answers over the rows audited before');
is( $down->safe_psql('postgres', q{
		SELECT state, wait_event_type IS NOT NULL, upstream_slot_wal_status IS NOT NULL FROM logical_audit.status}),
	'streaming|t|t', 'status has the new columns');

$up->safe_psql('postgres', q{DELETE FROM t WHERE id = 1});
wait_for_audit_catchup($up, $down, 'sub');
is($down->safe_psql('postgres', q{SELECT string_agg(op, ',' ORDER BY commit_lsn, ordinal) FROM logical_audit.change}),
	'INSERT,UPDATE,DELETE', 'the audit goes on, exactly once');

done_testing();
