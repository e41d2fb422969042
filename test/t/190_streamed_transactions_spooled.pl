# Large transactions arrive streamed (protocol 2) while they are still running upstream: their
# chunks are spooled to files under the downstream's data directory, and audited in upstream order
# when the transaction commits, without the changes of a subtransaction rolled back to a savepoint.
# An aborted streamed transaction audits nothing; a kill -9 of the downstream in the middle of a
# stream audits the transaction exactly once; no spool file is left behind.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use AuditTest;

# The smallest decoding memory: a few thousand changes make the upstream stream a transaction.
my ($up, $down) = new_audited_table(upstream_conf => ['logical_decoding_work_mem = 64kB']);
my $spool_dir = $down->data_dir . '/pg_logical_audit';

# The spool files on the downstream now.
sub spool_files
{
	return scalar(() = glob("$spool_dir/*.stream"));
}

# Waits until the downstream holds a spool file: the open transaction was streamed to it.
sub wait_for_spool_file
{
	my ($what) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	usleep(100_000) while spool_files() == 0 && time() < $deadline;
	ok(spool_files() > 0, $what) or diag(status_report($down));
	return;
}

# Opens upstream a transaction inserting ids from..to, left open until its changes are streamed.
sub open_streamed_insert
{
	my ($from, $to, $what) = @_;
	my $session = $up->background_psql('postgres');
	$session->query_safe('BEGIN');
	$session->query_safe("INSERT INTO t SELECT generate_series($from, $to)");
	wait_for_spool_file($what);
	return $session;
}

# The audited inserted ids in a range, in audit order, and the upstream's ids in that range.
sub audited_ids
{
	my ($from, $to) = @_;
	return $down->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || coalesce(md5(string_agg(new_row->>'id', ',' ORDER BY commit_lsn, ordinal)), '')
		FROM logical_audit.change WHERE op = 'INSERT' AND (new_row->>'id')::int BETWEEN $from AND $to});
}

sub upstream_ids
{
	my ($from, $to) = @_;
	return $up->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || coalesce(md5(string_agg(id::text, ',' ORDER BY id)), '')
		FROM t WHERE id BETWEEN $from AND $to});
}

# 1. A streamed transaction with a rolled-back and a released savepoint, while another commits.
my $big = $up->background_psql('postgres');
$big->query_safe('BEGIN');
$big->query_safe('INSERT INTO t SELECT generate_series(1, 5000)');
$big->query_safe('SAVEPOINT a');
$big->query_safe('INSERT INTO t SELECT generate_series(5001, 8000)');
wait_for_spool_file('the running transaction is streamed to a spool file');
$big->query_safe('ROLLBACK TO SAVEPOINT a');
$big->query_safe('SAVEPOINT b');
$big->query_safe('INSERT INTO t SELECT generate_series(8001, 10000)');
$big->query_safe('RELEASE SAVEPOINT b');

$up->safe_psql('postgres', 'INSERT INTO t VALUES (-1)');
poll_until($down, q{SELECT count(*) FROM logical_audit.change WHERE new_row->>'id' = '-1'}, '1',
	'a transaction committed during the stream is audited at once', $down);
is(audited_ids(1, 100000), '0 ', 'nothing of the streamed transaction is audited before its commit');

$big->query_safe('INSERT INTO t SELECT generate_series(10001, 12000)');
$big->query_safe('COMMIT');
$big->quit;
wait_for_audit_catchup($up, $down, 'sub');

is(audited_ids(1, 100000), upstream_ids(1, 100000),
	'the streamed transaction is audited whole, in upstream order, without the rolled-back savepoint');
is(audited_ids(5001, 8000), '0 ', 'the rolled-back subtransaction left nothing');
is( $down->safe_psql('postgres', q{
		SELECT t.change_count || ' ' || (t.commit_lsn = c.commit_lsn)
		FROM logical_audit.transaction t JOIN logical_audit.change c USING (subscription, commit_lsn)
		WHERE c.new_row->>'id' = '1'}),
	'9000 true', 'one transaction row for the streamed transaction, with all its changes');
is(spool_files(), 0, 'the spool file is removed after the commit');

# 2. An aborted streamed transaction audits nothing.
$big = open_streamed_insert(20001, 26000, 'the transaction that will abort is streamed');
$big->query_safe('ROLLBACK');
$big->quit;
$up->safe_psql('postgres', 'INSERT INTO t VALUES (-2)');
wait_for_audit_catchup($up, $down, 'sub');
is(audited_ids(20001, 26000), '0 ', 'an aborted streamed transaction audits nothing');
is(spool_files(), 0, 'its spool file is removed at the abort');

# 3. kill -9 of the downstream while a transaction is being streamed.
$big = open_streamed_insert(30001, 36000, 'the transaction is being streamed when the downstream dies');
kill_downstream($down, 'sub');
wait_for_state($down, 'sub', 'streaming');
$big->query_safe('INSERT INTO t SELECT generate_series(36001, 40000)');
$big->query_safe('COMMIT');
$big->quit;
wait_for_audit_catchup($up, $down, 'sub');
is(audited_ids(30001, 40000), upstream_ids(30001, 40000),
	'a transaction streamed across a crash is audited exactly once');
is(spool_files(), 0, 'no spool file is left after the crash');
is( $down->safe_psql('postgres',
		'SELECT count(*) FROM (SELECT commit_lsn, ordinal FROM logical_audit.change GROUP BY 1, 2 HAVING count(*) > 1) d'),
	'0', 'no change is audited twice');

done_testing();
