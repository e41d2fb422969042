# No spool file outlives its transaction: a streamed transaction's file goes at its commit or
# abort, a rolled-back subtransaction's part is cut, and a stream file that no transaction in
# progress owns (left by any path that failed to remove it) is swept away once the worker is idle.
# (Transactions lost in an upstream crash: test 400; prepared ones: tests 200 and 405.)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table(upstream_conf => ['logical_decoding_work_mem = 64kB']);
my $spool_dir = $down->data_dir . '/pg_logical_audit';
my $id = $down->safe_psql('postgres', q{SELECT id FROM logical_audit.subscription WHERE name = 'sub'});

# A leftover: a stream file of a transaction this session knows nothing of.
my $orphan = "$spool_dir/$id-4000000000.stream";
open(my $fh, '>', $orphan) or die "cannot create $orphan: $!";
print $fh 'left behind';
close $fh;

$up->safe_psql('postgres', q{
	BEGIN; INSERT INTO t SELECT generate_series(1, 5000); COMMIT;
	BEGIN; INSERT INTO t SELECT generate_series(5001, 10000); ROLLBACK;
	BEGIN; INSERT INTO t SELECT generate_series(10001, 15000);
	SAVEPOINT s; INSERT INTO t SELECT generate_series(15001, 20000); ROLLBACK TO s;
	INSERT INTO t VALUES (20001); COMMIT;
});
wait_for_audit_catchup($up, $down, 'sub');
is( $down->safe_psql('postgres', q{SELECT count(*), min((new_row->>'id')::int), max((new_row->>'id')::int) FROM logical_audit.change}),
	'10001|1|20001', 'the committed rows are audited once, the aborted ones not');
cmp_ok($up->safe_psql('postgres', q{SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 'logical_audit_sub'}),
	'>=', 3, 'the transactions were streamed');
poll_until($down, qq{SELECT count(*) FROM pg_ls_dir('pg_logical_audit') f WHERE f LIKE '$id-%'}, '0',
	'no spool file left, the leftover swept', $down);
pass('no spool file outlives its transaction');

done_testing();
