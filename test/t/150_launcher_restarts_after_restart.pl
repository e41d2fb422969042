# After the downstream restarts, cleanly or after a crash (SIGKILL), the launcher starts every
# enabled subscription again on its own, and leaves stopped ones stopped; auditing resumes where
# it was, nothing lost or doubled.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table(subscriptions => [ 'enabled_sub', 'stopped_sub' ]);
$down->safe_psql('postgres', "SELECT logical_audit.stop('stopped_sub')");

my $next_id = 1;
for my $how ('clean restart', 'SIGKILL')
{
	$up->safe_psql('postgres', "INSERT INTO t VALUES ($next_id)");
	$next_id++;
	if ($how eq 'SIGKILL')
	{
		kill_downstream($down, 'enabled_sub');
	}
	else
	{
		$down->restart;
	}
	# Changes made while the downstream was away.
	$up->safe_psql('postgres', "INSERT INTO t VALUES ($next_id)");
	$next_id++;
	wait_for_state($down, 'enabled_sub', 'streaming');
	pass("$how: the enabled subscription streams again without any call");
	wait_for_audit_catchup($up, $down, 'enabled_sub');
	is( $down->safe_psql('postgres', q{
			SELECT string_agg(new_row->>'id', ',' ORDER BY (new_row->>'id')::int) FROM logical_audit.change
			WHERE subscription = 'enabled_sub'}),
		join(',', 1 .. $next_id - 1), "$how: every change audited once");
	is( $down->safe_psql('postgres',
			q{SELECT coalesce(pid::text, 'none') || ' ' || state || ' ' || enabled FROM logical_audit.status WHERE name = 'stopped_sub'}),
		'none stopped false', "$how: the stopped subscription stays stopped");
}

done_testing();
