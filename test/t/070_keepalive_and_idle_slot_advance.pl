# The worker answers the walsender's keepalives, with real timestamps, so an idle connection
# outlives the upstream's wal_sender_timeout; and once everything published is audited it confirms
# up to the WAL end the keepalives report, so the slot's confirmed_flush_lsn moves while nothing is
# published and an idle publication never holds WAL on the upstream.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $sender_timeout = 6;
my $up = new_upstream('upstream', conf => ["wal_sender_timeout = '${sender_timeout}s'"]);
# Periodic status updates far apart: only answers to keepalives can keep the connection alive.
my $down = new_downstream('downstream', conf => ["wal_receiver_status_interval = '600s'"]);

$up->safe_psql('postgres', q{
	CREATE TABLE published (id int PRIMARY KEY);
	CREATE TABLE unpublished (id int PRIMARY KEY, filler text);
	CREATE PUBLICATION audit_pub FOR TABLE published;
});
create_subscription($down, 'sub', $up);
$up->safe_psql('postgres', 'INSERT INTO published VALUES (1)');
wait_for_audit_catchup($up, $down, 'sub');

my $walsender = $up->safe_psql('postgres',
	"SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'");
ok($walsender =~ /^\d+$/, "the slot is in use by walsender $walsender");
my $log_offset = -s $up->logfile;
my $since = $up->safe_psql('postgres', 'SELECT now()');

# Idle for more than twice wal_sender_timeout, the same walsender keeps receiving replies.
my $span = 2 * $sender_timeout + 1;
poll_until($up,
	"SELECT reply_time > '$since'::timestamptz + interval '$span s' FROM pg_stat_replication WHERE pid = $walsender",
	't', "replies from the idle worker for ${span}s on the same connection", $down);
ok(!$up->log_contains(qr/terminating walsender process due to replication timeout/, $log_offset),
	'the walsender never timed out waiting for a reply');
is( $up->safe_psql('postgres',
		"SELECT abs(extract(epoch FROM now() - reply_time)) < 60 FROM pg_stat_replication WHERE pid = $walsender"),
	't', 'replies carry the real time (not zero)');

# WAL that publishes nothing: the slot still advances past it.
$up->safe_psql('postgres', q{INSERT INTO unpublished SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g});
my $target = $up->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
poll_until($up,
	"SELECT confirmed_flush_lsn >= '$target'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'",
	't', "upstream slot confirmed up to $target while nothing is published", $down);
is( $down->safe_psql('postgres', "SELECT flushed_lsn >= '$target'::pg_lsn FROM logical_audit.status WHERE name = 'sub'"),
	't', 'status.flushed_lsn reaches the upstream WAL end too');
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.transaction'), '1',
	'nothing was audited for the unpublished table');
is( $up->safe_psql('postgres', "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'"),
	$walsender, 'still the same connection');

done_testing();
