# A local transaction that fails after it has written audit rows leaves dead index entries behind;
# the retry's latest-image lookups meet them. The worker must never crash on them: it keeps the
# clear ERROR while the cause stays (a regclass value in binary mode), and once the cause is gone
# (a CHECK constraint the test drops) audits the transaction exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream', conf => [ 'log_min_error_statement = panic' ]);

$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v int, pad text);
	CREATE TABLE bad (r regclass);
	CREATE PUBLICATION audit_pub FOR TABLE t, bad;
});
create_subscription($down, 'binary_sub', $up, options => '{"binary": true}');
create_subscription($down, 'sub', $up);
$up->safe_psql('postgres', q{INSERT INTO t SELECT g, 0, 'x' FROM generate_series(1, 5000) g});
wait_for_audit_catchup($up, $down, $_) for qw(binary_sub sub);

# Whether the downstream's log shows a crashed backend or worker since that offset.
sub crashed_since
{
	my ($offset) = @_;
	return slurp_file($down->logfile, $offset) =~ /terminated by signal|was terminated|crash recovery/;
}

# Waits for the worker to fail $times more times after $after; returns the last error time.
sub wait_for_failures
{
	my ($name, $after, $times) = @_;
	$after = wait_for_new_error($down, $name, $after) for 1 .. $times;
	return $after;
}

# 1. The cause stays: a regclass value in binary mode, after 5,000 UPDATEs of the same transaction.
my $offset = -s $down->logfile;
my $error_time = status_field($down, 'binary_sub', 'last_error_time');
$up->safe_psql('postgres', q{
	BEGIN;
	UPDATE t SET v = 1, pad = repeat(md5(id::text), 100);
	INSERT INTO bad VALUES ('t');
	COMMIT;
});
$error_time = wait_for_failures('binary_sub', $error_time, 3);
ok(!crashed_since($offset), 'three retries over the aborted rows crash nothing')
  or diag(slurp_file($down->logfile, $offset));
like(status_field($down, 'binary_sub', 'last_error'), qr/regclass/, 'the error still names the regclass value');
is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.change WHERE subscription = 'binary_sub' AND op = 'UPDATE'}),
	'0', 'nothing of the refused transaction is recorded');
$down->safe_psql('postgres', q{SELECT logical_audit.drop_subscription('binary_sub')});

# 2. The cause goes: the downstream refuses the transaction's last row until the test lets it in.
wait_for_audit_catchup($up, $down, 'sub');
$down->safe_psql('postgres', q{
	ALTER TABLE logical_audit.change_data ADD CONSTRAINT refuse_last CHECK (new_row->>'v' IS DISTINCT FROM '-1')});
$offset = -s $down->logfile;
$error_time = status_field($down, 'sub', 'last_error_time');
$up->safe_psql('postgres', q{
	BEGIN;
	UPDATE t SET v = 2, pad = repeat(md5((id + 1)::text), 100);
	INSERT INTO t VALUES (5001, -1, 'last');
	COMMIT;
});
$error_time = wait_for_failures('sub', $error_time, 3);
ok(!crashed_since($offset), 'three retries over the aborted rows crash nothing (text mode)')
  or diag(slurp_file($down->logfile, $offset));
$down->safe_psql('postgres', 'ALTER TABLE logical_audit.change_data DROP CONSTRAINT refuse_last');
wait_for_audit_catchup($up, $down, 'sub');
is( $down->safe_psql('postgres', q{
		SELECT count(*), count(DISTINCT new_row->>'id'), min(changed_columns::text), max(changed_columns::text)
		FROM logical_audit.change WHERE subscription = 'sub' AND op = 'UPDATE' AND new_row->>'v' = '2'}),
	'5000|5000|{v,pad}|{v,pad}', 'once the cause is gone every UPDATE is audited once, compared with its latest image');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.change WHERE subscription = 'sub' AND op = 'UPDATE'
		AND new_row = jsonb_build_object('id', (new_row->>'id')::int, 'v', 2, 'pad', repeat(md5(((new_row->>'id')::int + 1)::text), 100))}),
	'5000', 'each audited row is the upstream row, byte for byte');
# The aborted attempts had the new row's image waiting in the image store's batch: the retry
# writes it once, and the row's history is its one INSERT.
is( $down->safe_psql('postgres', q{
		SELECT count(*), count(DISTINCT row_key) FROM logical_audit.row_image i
		JOIN logical_audit.relation r ON r.id = i.relation_id JOIN logical_audit.store st USING (subscription_id)
		WHERE st.name = 'sub' AND r.table_name = 't'}),
	'5001|5001', 'one image per row after the retries');
is($down->safe_psql('postgres', q{SELECT string_agg(op, ',') FROM logical_audit.history('public', 't', '{"id": 5001}', 'sub')}),
	'INSERT', 'the row inserted by the retried transaction has its one INSERT');
ok(!crashed_since($offset), 'and nothing crashed');

done_testing();
