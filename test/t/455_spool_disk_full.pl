# Fault matrix: the spool file of a large streamed transaction cannot grow (the downstream runs
# under a file-size limit, as a full disk would refuse the write: the write fails with EFBIG). The
# worker records the error naming the spool file and retries; it records nothing of that
# transaction nor of any after it, and its position does not pass it. Once the downstream is
# restarted without the limit, the transaction and those after it are audited exactly once, and no
# spool file is left.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my $rows = 100_000;
# Files may grow to 24 MB: WAL segments (16 MB) and the small audit tables fit, the spool file of
# the transaction below (over 40 MB) does not.
my $limit = 24 * 1024 * 1024;

my ($up, $down) = new_streaming_pair(1);

# The limit on the running postmaster (soft limit only, so that it can be lifted again) is inherited
# by the processes it starts from now on: start the worker again under it. PostgreSQL ignores
# SIGXFSZ, so a write past the limit fails with EFBIG.
is(system('prlimit', '--pid', postmaster_pid($down), "--fsize=$limit:unlimited"), 0,
	'a file-size limit set on the downstream postmaster (prlimit, of util-linux)')
  or die "prlimit failed\n";
$down->safe_psql('postgres', q{SELECT logical_audit.stop('sub')});
$down->safe_psql('postgres', q{SELECT logical_audit.start('sub')});
wait_for_state($down, 'sub', 'streaming');
my $worker = wait_for_worker_pid($down, 'sub');
my ($fsize) = slurp_file("/proc/$worker/limits") =~ /^Max file size\s+(\d+)/m;
is($fsize, $limit, 'the worker runs under the file-size limit');

my $error_before = status_field($down, 'sub', 'last_error_time');
my $before_big = $up->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$up->safe_psql('postgres', qq{
	INSERT INTO t SELECT g, repeat(md5(g::text), 12) FROM generate_series(1001, 1000 + $rows) g});
$up->safe_psql('postgres', q{INSERT INTO t VALUES (11, 'after')});

$error_before = wait_for_new_error($down, 'sub', $error_before);
my $last_error = status_field($down, 'sub', 'last_error');
note("last_error: $last_error");
like($last_error, qr/spool file/, 'status.last_error names the spool file');
like($last_error, qr/could not write/, 'status.last_error says the write failed');
# A second failure: the worker retried, streamed the transaction again, and failed again.
wait_for_new_error($down, 'sub', $error_before);
pass('the worker retries');
is( $down->safe_psql('postgres',
		"SELECT coalesce(flushed_lsn <= '$before_big'::pg_lsn, true) FROM logical_audit.status WHERE name = 'sub'"),
	't', 'status.flushed_lsn does not pass the transaction');
is( $up->safe_psql('postgres',
		"SELECT confirmed_flush_lsn <= '$before_big'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'"),
	't', 'the upstream slot is not confirmed past it');
is(audited_count($down, 'sub'), '10', 'nothing of the transaction nor after it is recorded');

# Without the limit: a restart, from a postmaster started anew.
$down->restart;
wait_for_state($down, 'sub', 'streaming');
$worker = wait_for_worker_pid($down, 'sub');
($fsize) = slurp_file("/proc/$worker/limits") =~ /^Max file size\s+(\S+)/m;
is($fsize, 'unlimited', 'the worker runs without the limit after the restart');
wait_for_audit_catchup($up, $down, 'sub');

audit_is_exactly_once($down, 'sub', upstream_rows($up, 't'));
is( $down->safe_psql('postgres', qq{
		SELECT count(*) FROM logical_audit.transaction WHERE subscription = 'sub' AND change_count = $rows}),
	'1', 'the large transaction is one transaction row with all its changes');
is(spool_files($down), 0, 'no spool file is left');
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
