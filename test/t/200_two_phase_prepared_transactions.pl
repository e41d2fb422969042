# With option two_phase, a prepared transaction is received at its PREPARE, spooled durably, and
# audited at its COMMIT PREPARED with its gid and prepare time; a ROLLBACK PREPARED is recorded as
# a rolled-back prepared transaction without changes. A kill -9 of the downstream between PREPARE
# and COMMIT PREPARED loses and doubles nothing. Large prepared transactions arrive streamed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream', conf => ['max_prepared_transactions = 10', 'logical_decoding_work_mem = 64kB']);
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
create_subscription($down, 'sub', $up, options => '{"two_phase": true}');
my $spool_dir = $down->data_dir . '/pg_logical_audit';

# Runs SQL upstream and waits until the downstream has audited up to there.
sub upstream_step { audited_step($up, $down, 'sub', @_) }

# Prepares upstream a transaction inserting ids from..to, and waits until its PREPARE is received.
sub prepare_ids
{
	my ($from, $to, $gid) = @_;
	upstream_step("BEGIN; INSERT INTO t SELECT generate_series($from, $to); PREPARE TRANSACTION '$gid';");
}

# The number of prepared transactions' spool files on the downstream.
sub prepared_files
{
	return scalar(() = glob("$spool_dir/*.prepared"));
}

# The audited ids in a range and, for their transactions: gid, whether all are prepared and
# committed, change count.
sub audited
{
	my ($from, $to) = @_;
	return $down->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || coalesce(min(t.gid), '-') || ' '
		       || coalesce(bool_and(t.prepare_time IS NOT NULL AND NOT t.rolled_back)::text, '-') || ' '
		       || coalesce(min(t.change_count)::text, '-')
		FROM logical_audit.change c JOIN logical_audit.transaction t USING (subscription, commit_lsn)
		WHERE (c.new_row->>'id')::int BETWEEN $from AND $to});
}

is($up->safe_psql('postgres', q{SELECT two_phase FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'}),
	't', 'the slot decodes prepared transactions');

# 1. PREPARE, then COMMIT PREPARED.
prepare_ids(1, 3, 'g1');
is(prepared_files(), 1, 'the prepared transaction is spooled once its PREPARE arrives');
is(audited(1, 3), '0 - - -', 'nothing is audited at PREPARE');
upstream_step(q{COMMIT PREPARED 'g1'});
is(audited(1, 3), '3 g1 true 3', 'COMMIT PREPARED audits the transaction with its gid and prepare time');
is(prepared_files(), 0, 'the spool file goes after COMMIT PREPARED');
is( $down->safe_psql('postgres', q{
		SELECT t.commit_time >= t.prepare_time FROM logical_audit.transaction t WHERE gid = 'g1'}),
	't', 'the commit time is that of COMMIT PREPARED, after the prepare time');

# 2. PREPARE, then ROLLBACK PREPARED.
prepare_ids(10, 12, 'g2');
upstream_step(q{ROLLBACK PREPARED 'g2'});
is(audited(10, 12), '0 - - -', 'a rolled-back prepared transaction audits no change');
is( $down->safe_psql('postgres', q{
		SELECT rolled_back::text || ' ' || change_count || ' ' || (prepare_time IS NOT NULL)::text
		FROM logical_audit.transaction WHERE gid = 'g2'}),
	'true 0 true', 'it is recorded as a rolled-back prepared transaction');
is(prepared_files(), 0, 'its spool file goes at ROLLBACK PREPARED');

# 3. kill -9 of the downstream between PREPARE and COMMIT PREPARED.
prepare_ids(20, 22, 'g3');
kill_downstream($down, 'sub');
wait_for_state($down, 'sub', 'streaming');
is(prepared_files(), 1, 'the prepared transaction survives the crash in its spool file');
upstream_step(q{COMMIT PREPARED 'g3'});
is(audited(20, 22), '3 g3 true 3', 'committed after the crash, it is audited exactly once');

# 4. A prepared transaction large enough to be streamed (Stream Prepare).
prepare_ids(1001, 6000, 'g4');
upstream_step(q{COMMIT PREPARED 'g4'});
is(audited(1001, 6000), '5000 g4 true 5000', 'a streamed prepared transaction is audited whole at COMMIT PREPARED');
is( $up->safe_psql('postgres', q{SELECT stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = 'logical_audit_sub'}),
	't', 'the upstream streamed it');

is( $down->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT (commit_lsn, ordinal)) FROM logical_audit.change}),
	'5006 5006', 'every change is audited once');

# 5. Dropping the subscription removes the spool file of a transaction still prepared.
prepare_ids(7000, 7000, 'g5');
is(prepared_files(), 1, 'a prepared transaction awaits its commit when the subscription is dropped');
$down->safe_psql('postgres', q{SELECT logical_audit.drop_subscription('sub')});
is(prepared_files(), 0, 'drop_subscription removes its spool files');
$up->safe_psql('postgres', q{ROLLBACK PREPARED 'g5'});

done_testing();
