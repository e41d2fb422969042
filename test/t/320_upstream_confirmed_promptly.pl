# Durable progress reaches the upstream without waiting for the periodic status update: with
# periodic updates off downstream (wal_receiver_status_interval = 0) and no reply requests from the
# upstream (wal_sender_timeout = 0), the slot's confirmed_flush_lsn and pg_stat_replication's
# flush_lsn still follow status.flushed_lsn, after a burst of transactions and after a lone one.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table(
	upstream_conf => [ 'wal_sender_timeout = 0' ],
	downstream_conf => [ 'wal_receiver_status_interval = 0', 'wal_receiver_timeout = 0' ]);

# Waits until the upstream knows that everything up to the audited position is flushed.
sub upstream_confirms
{
	my ($what) = @_;
	my $flushed = wait_for_audit_catchup($up, $down, 'sub');
	poll_until($up, qq{
		SELECT s.confirmed_flush_lsn >= '$flushed' AND r.flush_lsn >= '$flushed'
		FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
		WHERE s.slot_name = 'logical_audit_sub'}, 't', "the upstream confirms $what up to $flushed", $down);
	pass("the upstream confirms $what");
	return;
}

$up->safe_psql('postgres', "INSERT INTO t VALUES ($_)") for 1 .. 50;
upstream_confirms('a burst of transactions');
$up->safe_psql('postgres', 'INSERT INTO t VALUES (51)');
upstream_confirms('a lone transaction');
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.change'), '51', 'every change audited');

done_testing();
