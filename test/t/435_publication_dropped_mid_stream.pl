# Fault matrix: the publication is dropped upstream while the worker streams it, and changes go on.
# The upstream's pgoutput cannot decode the changes after the drop (it looks the publication up by
# name): the walsender fails, the worker records the error naming the publication and retries, and
# its position does not pass what it audited, all of it from before the drop.
# Observed with PostgreSQL 15 (asserted below): creating the publication again does not help. The
# walsender decodes each change with the catalog as of that change, and a publication created
# later does not exist for the changes made between the drop and the new CREATE PUBLICATION, so
# the worker keeps failing at the first of them and audits nothing after the drop. This is the
# upstream's behaviour (PostgreSQL 15's own subscriptions get stuck the same way); the audit has no
# silent gap, and the way out is a new subscription (a new slot).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my ($up, $down) = new_audited_table();
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 1 .. 10));
wait_for_audit_catchup($up, $down, 'sub');
my $before_drop = upstream_rows($up, 't');

my $error_before = status_field($down, 'sub', 'last_error_time');
$up->safe_psql('postgres', 'DROP PUBLICATION audit_pub');
my $after_drop = $up->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 11 .. 20));

$error_before = wait_for_new_error($down, 'sub', $error_before);
my $last_error = status_field($down, 'sub', 'last_error');
note("last_error: $last_error");
like($last_error, qr/audit_pub/, 'status.last_error names the publication');
# A second error: the worker retried and failed at the same place.
$error_before = wait_for_new_error($down, 'sub', $error_before);
like(status_field($down, 'sub', 'state'), qr/^(waiting_retry|connecting)$/, 'the worker waits to retry');
is( $down->safe_psql('postgres',
		"SELECT coalesce(flushed_lsn <= '$after_drop'::pg_lsn, true) FROM logical_audit.status WHERE name = 'sub'"),
	't', 'status.flushed_lsn does not pass the drop');
is( $up->safe_psql('postgres',
		"SELECT confirmed_flush_lsn <= '$after_drop'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'"),
	't', 'the upstream slot is not confirmed past the drop');
audit_is_exactly_once($down, 'sub', $before_drop);

# The publication again, and changes after it: still stuck at the first change after the drop.
$up->safe_psql('postgres', 'CREATE PUBLICATION audit_pub FOR TABLE t');
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 21 .. 30));
$error_before = wait_for_new_error($down, 'sub', $error_before);
wait_for_new_error($down, 'sub', $error_before);
like(status_field($down, 'sub', 'last_error'), qr/audit_pub/,
	'after CREATE PUBLICATION the worker still fails on the changes made while it did not exist');
is(audited_count($down, 'sub'), '10', 'and audits nothing after the drop');

done_testing();
