# Fault matrix: a user session on the downstream holds an ACCESS EXCLUSIVE lock on
# logical_audit.change_data in an open transaction while upstream changes arrive. The worker waits for
# the lock: logical_audit.status shows what it waits for (wait_event_type 'Lock', as
# pg_stat_activity shows it) while its state stays streaming, without an error. Once the user's
# transaction ends, everything is audited exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my ($up, $down) = new_audited_table();
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 1 .. 10));
wait_for_audit_catchup($up, $down, 'sub');
my $worker = wait_for_worker_pid($down, 'sub');

my $locker = $down->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE logical_audit.change_data IN ACCESS EXCLUSIVE MODE');
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 11 .. 20));
$up->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(101, 200)');

poll_until($down, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $worker", 'Lock',
	'the worker waiting for the lock', $down);
pass('the worker waits for the lock on the audit table (pg_stat_activity)');
my $has_columns = is( $down->safe_psql('postgres', q{
		SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns
		WHERE table_schema = 'logical_audit' AND table_name = 'status'
		  AND column_name IN ('wait_event_type', 'wait_event')}),
	'wait_event,wait_event_type', 'logical_audit.status has the columns wait_event_type and wait_event');
# Without the columns the next two checks cannot run (failed above); the rest still can.
if ($has_columns)
{
	poll_until($down, q{SELECT wait_event_type FROM logical_audit.status WHERE name = 'sub'}, 'Lock',
		'status showing the worker waiting for a lock', $down);
	is( $down->safe_psql('postgres', qq{
			SELECT s.wait_event_type || ' ' || s.wait_event = a.wait_event_type || ' ' || a.wait_event
			FROM logical_audit.status s, pg_stat_activity a WHERE s.name = 'sub' AND a.pid = $worker}),
		't', 'status shows the wait event pg_stat_activity shows');
}
is(status_field($down, 'sub', 'state'), 'streaming', 'the state stays streaming while it waits');
is(status_field($down, 'sub', 'last_error'), '', 'no error');
# (The change table itself cannot be read while locked: its transaction rows tell.)
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.transaction'), '10',
	'nothing more is audited while the table is locked');

$locker->query_safe('COMMIT');
$locker->quit;
wait_for_audit_catchup($up, $down, 'sub');
audit_is_exactly_once($down, 'sub', upstream_rows($up, 't'));
is(status_field($down, 'sub', 'last_error'), '', 'still no error');
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
