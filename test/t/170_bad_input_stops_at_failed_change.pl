# A change the worker cannot record (here: the downstream audit table rejects it through a CHECK
# constraint added by the test) is an ERROR naming the LSN, with a context naming relation and xid,
# recorded in status.last_error; the worker retries and never moves its position, locally or
# upstream, past the failed change, nor records anything after it. Once the cause is fixed the
# failed transaction and everything after it are audited exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
# Only the server's own messages in its log: the test's statements would mention the table too.
my $down = new_downstream('downstream', conf => [ 'log_statement = none', 'log_min_error_statement = panic' ]);

$up->safe_psql('postgres', q{
	CREATE TABLE poison_target (id int PRIMARY KEY, v text);
	CREATE PUBLICATION audit_pub FOR TABLE poison_target;
});
create_subscription($down, 'sub', $up);
$down->safe_psql('postgres', q{
	ALTER TABLE logical_audit.change_data ADD CONSTRAINT reject_poison CHECK (new_row->>'v' IS DISTINCT FROM 'poison')});

$up->safe_psql('postgres', q{INSERT INTO poison_target VALUES (1, 'fine before')});
wait_for_audit_catchup($up, $down, 'sub');
my $before_poison = $up->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $log_offset = -s $down->logfile;
my $error_time = status_field($down, 'sub', 'last_error_time');

my $xid = $up->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO poison_target VALUES (2, 'fine, same transaction');
	INSERT INTO poison_target VALUES (3, 'poison');
	INSERT INTO poison_target VALUES (4, 'fine, after it in the same transaction');
	SELECT pg_current_xact_id();
	COMMIT;
});
$up->safe_psql('postgres', q{INSERT INTO poison_target VALUES (5, 'fine, a later transaction')});

$error_time = wait_for_new_error($down, 'sub', $error_time);
my $last_error = status_field($down, 'sub', 'last_error');
like($last_error, qr/reject_poison/, 'status.last_error gives the cause');
like($last_error, qr{[0-9A-F]+/[0-9A-F]+}, 'status.last_error names an LSN');
note("last_error: $last_error");

# A second failure: the worker retried, and still stands before the failed transaction.
wait_for_new_error($down, 'sub', $error_time);
is( $down->safe_psql('postgres',
		"SELECT coalesce(flushed_lsn <= '$before_poison'::pg_lsn, true) FROM logical_audit.status WHERE name = 'sub'"),
	't', 'status.flushed_lsn stays before the failed transaction');
is( $up->safe_psql('postgres',
		"SELECT confirmed_flush_lsn <= '$before_poison'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'"),
	't', 'the upstream slot is not confirmed past it');
is($down->safe_psql('postgres', q{SELECT string_agg(new_row->>'id', ',') FROM logical_audit.change}), '1',
	'nothing of the failed transaction nor after it is recorded');

# The server log has the error with its context: relation and xid.
my $log = slurp_file($down->logfile, $log_offset);
# Each line of the report (ERROR, DETAIL, CONTEXT) carries the log line prefix.
my ($report) = $log =~ /(ERROR:[^\n]*reject_poison[^\n]*(?:\n[^\n]*(?:DETAIL|CONTEXT):[^\n]*)*)/;
ok(defined $report, 'the error is in the server log') or diag($log);
my ($context) = ($report // '') =~ /CONTEXT:([^\n]*)/;
$context //= '';
like($context, qr/poison_target/, 'its context names the relation');
like($context, qr/\b$xid\b/, 'its context names the upstream xid');
like($context, qr{[0-9A-F]+/[0-9A-F]+}, 'its context names the LSN');

$down->safe_psql('postgres', 'ALTER TABLE logical_audit.change_data DROP CONSTRAINT reject_poison');
wait_for_state($down, 'sub', 'streaming');
wait_for_audit_catchup($up, $down, 'sub');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(new_row->>'id', ',' ORDER BY commit_lsn, ordinal) FROM logical_audit.change}),
	'1,2,3,4,5', 'after the fix the failed transaction and the later one are audited exactly once, in order');
is( $down->safe_psql('postgres', "SELECT change_count FROM logical_audit.transaction WHERE xid = '$xid'::xid8"),
	'3', 'the failed transaction is recorded whole, once');

done_testing();
