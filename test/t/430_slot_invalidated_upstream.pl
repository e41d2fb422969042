# Fault matrix: while the subscription is stopped, the upstream removes WAL its slot still needs
# (max_slot_wal_keep_size) and invalidates the slot: the changes since the stop are gone for good.
# Started again, the worker must not stream on as if nothing happened, nor retry forever: its state
# becomes error, last_error names the slot, says it was lost and gives an LSN, and nothing after the
# lost point is audited silently.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

# A slot may hold back at most 1 MB of WAL; nothing else keeps WAL, and checkpoints recycle it.
my ($up, $down) = new_audited_table(upstream_conf => [
	'max_slot_wal_keep_size = 1MB', 'wal_keep_size = 0', 'min_wal_size = 32MB', 'max_wal_size = 32MB' ]);
my $slot = 'logical_audit_sub';
$up->safe_psql('postgres', q{
	CREATE TABLE filler (id int, pad text);
	INSERT INTO t SELECT generate_series(1, 10);
});
wait_for_audit_catchup($up, $down, 'sub');
is( status_field($down, 'sub', q{upstream_slot_wal_status || ' ' || (upstream_slot_safe_wal_size > 0)}),
	'reserved true', 'status shows the slot reserved, with the WAL it may still take');
$down->safe_psql('postgres', q{SELECT logical_audit.stop('sub')});
wait_for_state($down, 'sub', 'stopped');
my $audited_before = audited_count($down, 'sub');
is($audited_before, '10', 'ten changes audited before the stop');

# Audited changes that the slot will never deliver, and WAL enough to get past the slot's limit:
# switch to a new segment and checkpoint until the upstream invalidates the slot.
my $wal_status = '';
for my $round (1 .. 20)
{
	$up->safe_psql('postgres', qq{
		INSERT INTO t SELECT generate_series($round * 100, $round * 100 + 9);
		INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 10000) g;
		SELECT pg_switch_wal();
		CHECKPOINT;
	});
	$wal_status = $up->safe_psql('postgres',
		"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '$slot'");
	last if $wal_status eq 'lost';
}
is($wal_status, 'lost', "the upstream invalidated slot $slot");

my $error_before = status_field($down, 'sub', 'last_error_time');
$down->safe_psql('postgres', q{SELECT logical_audit.start('sub')});
# Every state the worker shows until it settles in error: streaming must never be among them.
my %seen;
wait_until(sub {
		my $state = status_field($down, 'sub', 'state');
		$seen{$state} = 1;
		return $state eq 'error';
	}, 'the subscription in state error', $down);
pass('the subscription settles in state error, not waiting_retry');
ok(!$seen{streaming}, 'it never streams from the lost slot') or diag('states seen: ' . join(', ', sort keys %seen));

my $last_error = status_field($down, 'sub', 'last_error');
note("last_error: $last_error");
isnt(status_field($down, 'sub', 'last_error_time'), $error_before, 'an error is recorded');
like($last_error, qr/\Q$slot\E/, 'status.last_error names the slot');
like($last_error, qr/\blost\b/i, 'status.last_error says the slot was lost');
like($last_error, qr{[0-9A-F]+/[0-9A-F]+}, 'status.last_error gives an LSN');
is(audited_count($down, 'sub'), $audited_before, 'nothing after the lost point is audited');
is(status_field($down, 'sub', 'upstream_slot_wal_status'), 'lost', 'status shows the slot lost');

done_testing();
