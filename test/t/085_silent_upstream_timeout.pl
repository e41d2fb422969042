# An upstream that stops answering (its walsender frozen, the connection still open) is detected
# after wal_receiver_timeout: the worker records an error, waits to retry, and reconnects and
# audits again once the upstream recovers.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

# The walsender pings often, so that only a frozen upstream is silent for wal_receiver_timeout.
my ($up, $down) = new_audited_table(
	upstream_conf => ["wal_sender_timeout = '3s'"],
	downstream_conf => ["wal_receiver_timeout = '5s'"]);
$up->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
wait_for_audit_catchup($up, $down, 'sub');

my $walsender = $up->safe_psql('postgres',
	"SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'");
ok($walsender =~ /^\d+$/, "walsender $walsender serves the slot");

my $frozen;
END { kill 'CONT', $frozen if $frozen; }
kill 'STOP', $walsender and $frozen = $walsender;
my $error_before = status_field($down, 'sub', 'last_error_time');
wait_for_new_error($down, 'sub', $error_before);
pass('the worker gave up on the silent upstream and recorded an error');
note('last_error: ' . status_field($down, 'sub', 'last_error'));
ok($down->safe_psql('postgres', "SELECT state FROM logical_audit.status WHERE name = 'sub'")
	  =~ /^(waiting_retry|connecting)$/, 'it waits to reconnect');

kill 'CONT', $frozen;
$frozen = undef;
$up->safe_psql('postgres', 'INSERT INTO t VALUES (2)');
wait_for_state($down, 'sub', 'streaming');
wait_for_audit_catchup($up, $down, 'sub');
is( $down->safe_psql('postgres', q{SELECT string_agg(new_row->>'id', ',' ORDER BY commit_lsn) FROM logical_audit.change}),
	'1,2', 'after the upstream recovers, changes are audited again, once each');

done_testing();
