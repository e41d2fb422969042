# When the upstream goes away (clean shutdown or crash) the worker shows state waiting_retry with
# last_error, reconnects with backoff once the upstream is back, resumes where it left off, and
# audits every change exactly once, including changes made while it was disconnected.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table();
$up->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
wait_for_audit_catchup($up, $down, 'sub');

my $next_id = 2;
for my $mode (qw(fast immediate))
{
	my $error_before = status_field($down, 'sub', 'last_error_time');
	$up->stop($mode);
	wait_for_new_error($down, 'sub', $error_before);
	wait_for_state($down, 'sub', 'waiting_retry');
	pass("upstream stopped ($mode): waiting_retry with last_error");
	note('last_error: ' . status_field($down, 'sub', 'last_error'));

	$up->start;
	# Changes made while the worker is still disconnected, and after it is back.
	$up->safe_psql('postgres', "INSERT INTO t VALUES ($next_id)");
	$next_id++;
	wait_for_state($down, 'sub', 'streaming');
	$up->safe_psql('postgres', "INSERT INTO t VALUES ($next_id)");
	$next_id++;
	wait_for_audit_catchup($up, $down, 'sub');
	pass("upstream back after $mode stop: streaming and caught up");
}

my $ids = join(',', 1 .. $next_id - 1);
is( $down->safe_psql('postgres', q{
		SELECT string_agg(id, ',' ORDER BY id::int) FROM
		(SELECT new_row->>'id' AS id FROM logical_audit.change WHERE op = 'INSERT') c}),
	$ids, 'every row inserted upstream audited exactly once across the restarts');
is( $down->safe_psql('postgres', q{
		SELECT count(*) = count(DISTINCT commit_lsn) FROM logical_audit.transaction}),
	't', 'no transaction audited twice');

done_testing();
