# Fault matrix: the whole upstream freezes (SIGSTOP of its postmaster and every child, walsender
# and the backend of a running workload included) for longer than the downstream's
# wal_receiver_timeout, its connections left open. The worker notices the silence, records an
# error and waits to retry; once the upstream continues, it reconnects by itself and audits the
# workload, written before, across and after the freeze, exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my $rows = 3000;
# No autovacuum: no upstream process may start between listing the processes and freezing them.
my $up = new_upstream('upstream', conf => ['autovacuum = off']);
my $down = new_downstream('downstream', conf => ["wal_receiver_timeout = '2s'"]);
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE t;
	CREATE PROCEDURE workload(n int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN 1 .. n LOOP
			INSERT INTO t VALUES (i);
			COMMIT;
			PERFORM pg_sleep(0.002);
		END LOOP;
	END $$;
});
create_subscription($down, 'sub', $up);

my ($workload, $err) = start_upstream_sql($up, "CALL workload($rows)");
poll_until($down, 'SELECT count(*) >= 200 FROM logical_audit.change', 't', 'the workload audited in part', $down);

# Every process of the upstream: its children as pg_stat_activity lists them, and the postmaster.
my @pids = grep { /^\d+$/ } split /\n/,
  $up->safe_psql('postgres', 'SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()');
my $walsender = $up->safe_psql('postgres',
	q{SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'});
ok((grep { $_ eq $walsender } @pids), "the walsender $walsender is among the processes frozen");
my $error_before = status_field($down, 'sub', 'last_error_time');
freeze_processes(postmaster_pid($up), @pids);
pass('upstream frozen: postmaster and ' . scalar(@pids) . ' children');

wait_for_new_error($down, 'sub', $error_before);
my $last_error = status_field($down, 'sub', 'last_error');
note("last_error: $last_error");
like($last_error, qr/sent nothing|silent|timeout|timed out/i, 'status.last_error says the upstream went silent');
like(status_field($down, 'sub', 'state'), qr/^(waiting_retry|connecting)$/, 'the worker waits to reconnect');
my $audited_while_frozen = audited_count($down, 'sub');

thaw_processes();
pass('upstream continued');
$workload->finish;
is($?, 0, 'the upstream workload completed across the freeze') or diag($$err);
ok($audited_while_frozen < $rows, "the freeze came in the middle of the workload ($audited_while_frozen of $rows audited)");
$up->safe_psql('postgres', 'INSERT INTO t VALUES (-1)');
wait_for_state($down, 'sub', 'streaming');
wait_for_audit_catchup($up, $down, 'sub');

audit_is_exactly_once($down, 'sub', upstream_rows($up, 't'));
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
