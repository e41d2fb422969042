# Fault matrix: one of two published tables is removed from the publication (ALTER PUBLICATION ...
# DROP TABLE) while the worker streams. Its changes before the removal are audited, those after
# it are not (the upstream no longer publishes them); the other table's changes, before, after and
# in the same transactions, are all audited exactly once; the worker streams on without an error.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE kept (id int PRIMARY KEY);
	CREATE TABLE removed (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE kept, removed;
});
create_subscription($down, 'sub', $up);

# Before the removal: each table alone, and both in one transaction.
$up->safe_psql('postgres', q{
	INSERT INTO kept VALUES (1);
	INSERT INTO removed VALUES (1);
	BEGIN; INSERT INTO kept VALUES (2); INSERT INTO removed VALUES (2); COMMIT;
});
# Mid-stream: no wait for the worker, which decodes the removal between the changes.
$up->safe_psql('postgres', q{
	BEGIN; INSERT INTO kept VALUES (3); INSERT INTO removed VALUES (3); COMMIT;
	ALTER PUBLICATION audit_pub DROP TABLE removed;
	BEGIN; INSERT INTO kept VALUES (101); INSERT INTO removed VALUES (101); COMMIT;
	INSERT INTO removed VALUES (102);
	INSERT INTO kept VALUES (102);
});
wait_for_audit_catchup($up, $down, 'sub');

audit_is_exactly_once($down, 'sub', upstream_rows($up, 'kept'), upstream_rows($up, 'removed', 'id < 100'));
is( $down->safe_psql('postgres', q{
		SELECT string_agg(table_name || ':' || (new_row->>'id'), ',' ORDER BY commit_lsn, ordinal)
		FROM logical_audit.change}),
	'kept:1,removed:1,kept:2,removed:2,kept:3,removed:3,kept:101,kept:102',
	'the removed table\'s changes are audited up to its removal, the other\'s throughout, in order');
is(status_field($down, 'sub', 'last_error'), '', 'no error');
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
