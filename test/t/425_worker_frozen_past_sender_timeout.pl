# Fault matrix: the audit worker freezes (SIGSTOP) while the upstream keeps committing changes,
# until the walsender gives up on it after wal_sender_timeout and ends the connection. Once the
# worker continues, it notices the closed connection, records the error, reconnects by itself and
# audits every change, those it had received before the freeze and those made since, exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my ($up, $down) = new_audited_table(upstream_conf => ["wal_sender_timeout = '2s'"]);
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 1 .. 20));
wait_for_audit_catchup($up, $down, 'sub');

my $worker = wait_for_worker_pid($down, 'sub');
my $walsender = $up->safe_psql('postgres',
	q{SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'});
my $error_before = status_field($down, 'sub', 'last_error_time');
my $up_log_offset = -s $up->logfile;
freeze_processes($worker);
pass("worker $worker frozen");

# Changes made while the worker is frozen, in transactions of 1 and of 100 rows.
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 21 .. 40));
$up->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1001, 1100)');
# The walsender ends the connection of the silent worker: the slot becomes inactive.
poll_until($up,
	qq{SELECT active_pid IS DISTINCT FROM $walsender FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'},
	't', 'the walsender ending the connection of the frozen worker', $down);
like(slurp_file($up->logfile, $up_log_offset), qr/terminating walsender process due to replication timeout/,
	'the walsender gave up on the frozen worker after wal_sender_timeout');
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 41 .. 60));

thaw_processes();
pass('worker continued');
wait_for_new_error($down, 'sub', $error_before);
note('last_error: ' . status_field($down, 'sub', 'last_error'));
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 61 .. 80));
wait_for_state($down, 'sub', 'streaming');
wait_for_audit_catchup($up, $down, 'sub');

audit_is_exactly_once($down, 'sub', upstream_rows($up, 't'));
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
