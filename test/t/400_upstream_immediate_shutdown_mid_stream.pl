# Fault matrix: the upstream crashes (immediate shutdown) while a large transaction is open and
# being streamed to the worker's spool file. That transaction never commits, so none of its rows is
# audited; the transactions committed before and after the crash are audited exactly once; the
# worker reconnects by itself, and no spool file is left once the upstream has told it that the
# transaction is gone.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

# The smallest decoding memory: a few thousand changes make the upstream stream a transaction.
my ($up, $down) = new_audited_table(upstream_conf => ['logical_decoding_work_mem = 64kB']);

# Committed before the crash, one transaction per row.
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 1 .. 20));
wait_for_audit_catchup($up, $down, 'sub');

# Nothing commits while it streams: the slot stays confirmed before its start, so that the upstream
# streams it again from its start after the crash.
my $big = $up->background_psql('postgres');
$big->query_safe('BEGIN');
$big->query_safe('INSERT INTO t SELECT generate_series(100001, 106000)');
wait_until(sub { spool_files($down) > 0 }, 'the open transaction streamed to a spool file', $down);
pass('the open transaction is streamed to a spool file');

my $error_before = status_field($down, 'sub', 'last_error_time');
$up->stop('immediate');
# The session of the open transaction died with its server.
eval { $big->quit };
wait_for_new_error($down, 'sub', $error_before);
pass('the worker recorded the loss of the upstream');
$up->start;

# Committed after the crash, one transaction per row.
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 21 .. 40));
wait_for_state($down, 'sub', 'streaming');
# After a restart the upstream streams the crashed transaction again from its start, and sends its
# Stream Abort only when the decoder sees a running-transactions record showing it gone: a
# CHECKPOINT writes one now (the background writer would within 15 s).
$up->safe_psql('postgres', 'CHECKPOINT');
wait_until(sub { spool_files($down) == 0 }, 'the spool file of the crashed transaction removed', $down);
pass('no spool file is left of the crashed transaction');
wait_for_audit_catchup($up, $down, 'sub');

is(audited_count($down, 'sub', q{(new_row->>'id')::int > 100000}), '0',
	'nothing of the transaction open at the crash is audited');
audit_is_exactly_once($down, 'sub', upstream_rows($up, 't'));
is($up->safe_psql('postgres', 'SELECT count(*) FROM t'), '40', 'the upstream holds the 40 committed rows');
is(spool_files($down), 0, 'still no spool file once caught up');
# The crash reset the upstream's statistics: these count what it streamed since.
is( $up->safe_psql('postgres',
		q{SELECT stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = 'logical_audit_sub'}),
	't', 'after its restart the upstream streamed the crashed transaction again (and then its abort)');
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
