# Fault matrix: the downstream is killed with SIGKILL (postmaster and worker) while the worker
# replays the spool file of a large streamed transaction that has committed upstream, writing its
# audit rows. After the restart the upstream streams the transaction again, and it is audited
# exactly once, whole, in one transaction row; no spool file is left and no process crashed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my $rows = 30_000;
my ($up, $down) = new_streaming_pair(-10);
my $size = $down->safe_psql('postgres', 'SELECT ' . change_bytes());

# About 2 kB per row of values that compress little: the spool file and the audit rows take room,
# and the replay takes long enough to be killed in its middle.
$up->safe_psql('postgres', qq{
	INSERT INTO t SELECT g, (SELECT string_agg(md5(g::text || i), '') FROM generate_series(1, 60) i)
	FROM generate_series(1, $rows) g});
# Nothing of a streamed transaction is written before its commit arrives: the audit table grows
# only once the worker replays the spool file.
my $grown = $size + 16 * 1024 * 1024;
poll_until($down, 'SELECT ' . change_bytes() . " > $grown", 't',
	'the worker replaying the spooled transaction', $down);
my $worker = wait_for_worker_pid($down, 'sub');
my $offset = -s $down->logfile;
$down->kill9;
kill 'KILL', $worker;
# Its spool file is removed only once the transaction is audited: still there, the kill came first.
ok(spool_files($down) > 0, 'the downstream died while the transaction was being replayed from its spool file');
start_after_kill9($down);

wait_for_state($down, 'sub', 'streaming');
wait_for_audit_catchup($up, $down, 'sub');
unlike(slurp_file($down->logfile, $offset), qr/terminated by signal/, 'no process crashed after the restart');
audit_is_exactly_once($down, 'sub', upstream_rows($up, 't'));
is( $down->safe_psql('postgres', qq{
		SELECT count(*) FROM logical_audit.transaction WHERE subscription = 'sub' AND change_count = $rows}),
	'1', 'the large transaction is one transaction row with all its changes');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.change WHERE (new_row->>'id')::int > 0 AND new_row->>'pad' =
		(SELECT string_agg(md5((new_row->>'id') || i), '') FROM generate_series(1, 60) i)}),
	$rows, 'each audited value is the upstream\'s');
is(spool_files($down), 0, 'no spool file is left');
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
