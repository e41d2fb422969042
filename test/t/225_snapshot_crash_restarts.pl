# A downstream killed with SIGKILL while the worker copies a large baseline snapshot keeps nothing of
# it: after the restart the worker drops the slot it had created, takes the snapshot again, and the
# audit ends up exactly as if no crash had happened, with one slot upstream. Once the snapshot is
# committed, a restart streams on from the consistent point: no second snapshot.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $rows = 300000;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream');

$up->safe_psql('postgres', qq{
	CREATE TABLE big (id int PRIMARY KEY, payload text);
	INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, $rows) g;
	CREATE PUBLICATION audit_pub FOR TABLE big;
});

# How many times the downstream log says the worker started a snapshot, and committed one.
sub snapshot_log_counts
{
	my $log = slurp_file($down->logfile);
	my $started = () = $log =~ /subscription "sub" created replication slot "logical_audit_sub" and copies/g;
	my $committed = () = $log =~ /subscription "sub" committed its baseline snapshot/g;
	return "$started started, $committed committed";
}

create_subscription($down, 'sub', $up, options => '{"snapshot": true}', wait => 0);

# Kill while the worker copies: its status says so and its copy connection is reading upstream.
wait_for_state($down, 'sub', 'snapshot');
poll_until($up, q{SELECT count(*) > 0 FROM pg_stat_activity
                  WHERE application_name = 'sub snapshot' AND query LIKE 'FETCH%'},
	't', 'the copy is under way', $down);
is(snapshot_log_counts(), '1 started, 0 committed', 'the worker is copying the snapshot');
kill_downstream($down, 'sub');

wait_for_state($down, 'sub', 'streaming');
is(snapshot_log_counts(), '2 started, 1 committed', 'after the restart the snapshot was taken again, once');
is($up->safe_psql('postgres', 'SELECT string_agg(slot_name, \',\') FROM pg_replication_slots'),
	'logical_audit_sub', 'one slot upstream: the first attempt\'s slot was dropped');

# Exactly as if no crash happened: one transaction, every row once, equal to the upstream rows.
is( $down->safe_psql('postgres', q{
		SELECT count(*) || ' ' || min(commit_lsn::text) || ' ' || min(change_count) FROM logical_audit.transaction}),
	"1 0/0 $rows", 'one snapshot transaction');
my $upstream_digest = $up->safe_psql('postgres',
	q{SELECT count(*) || ' ' || md5(string_agg(to_jsonb(b)::text, E'\n' ORDER BY id)) FROM big b});
my $audited_sql = q{
	SELECT count(*) || ' ' || md5(string_agg(new_row::text, E'\n' ORDER BY (new_row->>'id')::int))
	FROM logical_audit.change WHERE op = 'SNAPSHOT'};
is($down->safe_psql('postgres', $audited_sql), $upstream_digest,
	'the SNAPSHOT rows are the upstream rows, each once');
is( $down->safe_psql('postgres', q{
		SELECT count(DISTINCT ordinal) || ' ' || max(ordinal) FROM logical_audit.change WHERE op = 'SNAPSHOT'}),
	"$rows $rows", 'ordinals 1..n');

# Committed: a crash now, with changes upstream meanwhile, resumes streaming from where it was.
$up->safe_psql('postgres', q{UPDATE big SET payload = 'changed' WHERE id = 7});
wait_for_audit_catchup($up, $down, 'sub');
wait_for_worker_pid($down, 'sub');
kill_downstream($down, 'sub');
$up->safe_psql('postgres', q{INSERT INTO big VALUES (0, 'while down')});
wait_for_state($down, 'sub', 'streaming');
wait_for_audit_catchup($up, $down, 'sub');
is(snapshot_log_counts(), '2 started, 1 committed', 'no new snapshot after the snapshot was committed');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(op || ' ' || (new_row->>'id'), ', ' ORDER BY commit_lsn, ordinal)
		FROM logical_audit.change WHERE op <> 'SNAPSHOT'}),
	'UPDATE 7, INSERT 0', 'the stream resumes after the snapshot, each change once');
is($up->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '1', 'still one slot upstream');

done_testing();
