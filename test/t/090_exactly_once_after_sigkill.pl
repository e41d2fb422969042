# Exactly once: while the upstream runs a workload of many transactions (1000 of 100 rows, and
# single-row ones), the downstream is killed with SIGKILL (postmaster and worker at once) three
# times and restarted. In the end every upstream row is audited exactly once -- none missing, none
# doubled -- and every upstream transaction has exactly one transaction row with all its changes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($txns, $rows_per_txn, $single_every) = (1000, 100, 5);
my $batch_rows = $txns * $rows_per_txn;
my $single_rows = int($txns / $single_every);
my $all_rows = $batch_rows + $single_rows;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream');

$up->safe_psql('postgres', q{
	CREATE TABLE batch_row (id bigint PRIMARY KEY, txn int NOT NULL, payload text);
	CREATE TABLE single_row (id bigint PRIMARY KEY, payload text);
	CREATE PUBLICATION audit_pub FOR TABLE batch_row, single_row;
	CREATE PROCEDURE workload(txns int, rows_per_txn int, single_every int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR t IN 1 .. txns LOOP
			INSERT INTO batch_row
				SELECT (t - 1) * rows_per_txn + g, t, md5(g::text) FROM generate_series(1, rows_per_txn) g;
			COMMIT;
			IF t % single_every = 0 THEN
				INSERT INTO single_row VALUES (t, 'single ' || t);
				COMMIT;
			END IF;
			PERFORM pg_sleep(0.002);
		END LOOP;
	END $$;
});
create_subscription($down, 'sub', $up);

my ($workload, $err) = start_upstream_sql($up, "CALL workload($txns, $rows_per_txn, $single_every)");

# Kill the downstream each time the audit has made some progress: wherever the worker is then
# (mid-transaction, between transactions, catching up after a restart).
kill_downstream_at_progress($down, 'sub', map { $_ * int($all_rows / 4) } 1 .. 3);

$workload->finish;
is($?, 0, 'the upstream workload completed') or diag($$err);
is($up->safe_psql('postgres', 'SELECT (SELECT count(*) FROM batch_row) + (SELECT count(*) FROM single_row)'),
	$all_rows, "$all_rows rows upstream");

wait_for_audit_catchup($up, $down, 'sub');

is( $down->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT (table_name, new_row->>'id')) FROM logical_audit.change
		WHERE subscription = 'sub'}),
	"$all_rows $all_rows", 'as many change rows as upstream rows, none doubled');

# Set difference both ways between the upstream's keys and the audited ones.
my $batch_ids = $up->safe_psql('postgres', q{SELECT string_agg(id::text, ',') FROM batch_row});
my $single_ids = $up->safe_psql('postgres', q{SELECT string_agg(id::text, ',') FROM single_row});
my ($missing, $unexpected) = split /\|/, $down->safe_psql('postgres', qq{
	CREATE TEMP TABLE upstream_key AS
		SELECT 'batch_row' AS table_name, id FROM unnest('{$batch_ids}'::bigint[]) id
		UNION ALL SELECT 'single_row', id FROM unnest('{$single_ids}'::bigint[]) id;
	CREATE TEMP TABLE audited_key AS
		SELECT table_name, (new_row->>'id')::bigint AS id FROM logical_audit.change WHERE op = 'INSERT';
	SELECT (SELECT count(*) FROM (SELECT * FROM upstream_key EXCEPT SELECT * FROM audited_key) m) || '|' ||
	       (SELECT count(*) FROM (SELECT * FROM audited_key EXCEPT SELECT * FROM upstream_key) u);
});
is($missing, '0', 'no upstream row is missing from the audit');
is($unexpected, '0', 'the audit holds no row the upstream does not have');

my $expected_txns = $txns + $single_rows;
is( $down->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT xid) || ' ' || sum(change_count)
		FROM logical_audit.transaction WHERE subscription = 'sub'}),
	"$expected_txns $expected_txns $all_rows", 'one transaction row per upstream transaction');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.transaction t
		LEFT JOIN (SELECT subscription, commit_lsn, count(*) AS n, max(ordinal) AS last
		           FROM logical_audit.change GROUP BY 1, 2) c USING (subscription, commit_lsn)
		WHERE c.n IS DISTINCT FROM t.change_count OR c.last IS DISTINCT FROM t.change_count}),
	'0', 'each transaction row has all its change rows, ordinals 1..change_count');
is( $down->safe_psql('postgres', qq{
		SELECT count(*) FROM logical_audit.transaction
		WHERE change_count NOT IN ($rows_per_txn, 1)}),
	'0', 'no upstream transaction was split');

my $sample = upstream_value($up, 'SELECT to_jsonb(b) FROM batch_row b WHERE id = 54321');
jsonb_is($down, q{SELECT new_row FROM logical_audit.change WHERE table_name = 'batch_row' AND new_row->>'id' = '54321'},
	$sample, 'a sample row equals the upstream row');
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
