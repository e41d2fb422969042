# stop() ends the worker before it returns, whatever the worker is doing: streaming, sleeping
# between retries, or waiting on an upstream that does not answer its connection. After stop()
# the status shows no pid and state stopped, and the process is gone. start() starts the worker
# again, and start() of a running subscription is a no-op.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(gettimeofday tv_interval);
use AuditTest;

my ($up, $down) = new_audited_table();

# Calls stop() and checks that the worker $pid was gone by the time it returned.
sub stop_and_check
{
	my ($pid, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $t0 = [gettimeofday];
	# One session: stop() returns, then the same backend looks at status and pg_stat_activity.
	my $after = $down->safe_psql('postgres', qq{
		SELECT logical_audit.stop('sub');
		SELECT coalesce(pid::text, 'none') || ' ' || state || ' ' || enabled FROM logical_audit.status WHERE name = 'sub';
		SELECT count(*) FROM pg_stat_activity WHERE pid = $pid;
	}, timeout => $PostgreSQL::Test::Utils::timeout_default);
	note(sprintf('%s: stop() returned after %.3f s', $what, tv_interval($t0)));
	my @lines = split /\n/, $after;
	is($lines[-2], 'none stopped false', "$what: after stop() status shows no worker, stopped, disabled");
	is($lines[-1], '0', "$what: the worker is gone from pg_stat_activity when stop() returns");
	ok(!kill(0, $pid), "$what: worker process $pid no longer exists");
}

# While streaming.
my $pid = wait_for_worker_pid($down, 'sub');
stop_and_check($pid, 'streaming');
is( $up->safe_psql('postgres', "SELECT slot_name FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'"),
	'logical_audit_sub', 'the slot is kept');

# start() and a second start() that changes nothing.
$up->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
$down->safe_psql('postgres', "SELECT logical_audit.start('sub')");
wait_for_state($down, 'sub', 'streaming');
$pid = status_field($down, 'sub', 'pid');
$down->safe_psql('postgres', "SELECT logical_audit.start('sub')");
is(status_field($down, 'sub', 'pid'), $pid, 'start() of a running subscription keeps its worker');
wait_for_audit_catchup($up, $down, 'sub');
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.change'), '1',
	'the change made while stopped is audited after start()');

# While the worker sleeps between connection attempts.
$up->stop('fast');
wait_for_state($down, 'sub', 'waiting_retry');
$pid = wait_for_worker_pid($down, 'sub');
stop_and_check($pid, 'waiting to retry');
$up->start;

# While the worker waits for an upstream that accepts the connection but never answers.
my $frozen;
END { kill 'CONT', $frozen if $frozen; }
my $up_pid = PostgreSQL::Test::Utils::slurp_file($up->data_dir . '/postmaster.pid');
($up_pid) = $up_pid =~ /^(\d+)/;
kill 'STOP', $up_pid and $frozen = $up_pid;
$down->safe_psql('postgres', "SELECT logical_audit.start('sub')", timeout => $PostgreSQL::Test::Utils::timeout_default);
$pid = wait_for_worker_pid($down, 'sub');
wait_for_state($down, 'sub', 'connecting');
stop_and_check($pid, 'connecting to a frozen upstream');
kill 'CONT', $frozen;
$frozen = undef;

# And the subscription still works afterwards.
$down->safe_psql('postgres', "SELECT logical_audit.start('sub')");
$up->safe_psql('postgres', 'INSERT INTO t VALUES (2)');
wait_for_state($down, 'sub', 'streaming');
wait_for_audit_catchup($up, $down, 'sub');
is($down->safe_psql('postgres', q{SELECT string_agg(new_row->>'id', ',' ORDER BY commit_lsn) FROM logical_audit.change}),
	'1,2', 'audited once each after all the stops');

done_testing();
