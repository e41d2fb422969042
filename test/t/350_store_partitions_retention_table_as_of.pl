# The 1.2 store: the worker makes time partitions ahead of need and one for a commit time no
# partition holds; retention drops whole partitions older than it, unless a legal hold suspends
# it; table_as_of() gives back the whole upstream table as it was at a time.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v text, doc text);
	ALTER TABLE t ALTER doc SET STORAGE EXTERNAL;
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
create_subscription($down, 'sub', $up);

# Partitions ahead of need: this interval's and the next one's, for each audit table.
is( $down->safe_psql('postgres', q{
		SELECT string_agg(audit_table || ' ' || (from_time <= now() AND now() < to_time), ',' ORDER BY audit_table, from_time)
		FROM logical_audit.partitions WHERE subscription = 'sub'}),
	'change true,change false,message true,message false,transaction true,transaction false',
	'the worker made the partitions of now and of the next interval');

# The whole table, as the upstream has it, as jsonb rows in key order.
sub upstream_table
{
	return $up->safe_psql('postgres', q{SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM t});
}

sub table_as_of
{
	my ($at) = @_;
	return $down->safe_psql('postgres', sprintf(q{
		SELECT coalesce(jsonb_agg(r ORDER BY (r->>'id')::int), '[]')
		FROM logical_audit.table_as_of('public', 't', %s, 'sub') r}, sql_literal($at)));
}

my @checkpoints;
for my $step (
	q{INSERT INTO t SELECT g, 'v' || g, CASE WHEN g % 2 = 0 THEN repeat('d', 3000) END FROM generate_series(1, 20) g},
	q{UPDATE t SET v = 'w' WHERE id <= 5; DELETE FROM t WHERE id = 6; UPDATE t SET id = 60 WHERE id = 7},
	q{UPDATE t SET v = 'again' WHERE id IN (2, 60); INSERT INTO t VALUES (6, 'back', NULL)},
	q{TRUNCATE t; INSERT INTO t VALUES (100, 'after truncate', repeat('e', 3000))})
{
	$up->safe_psql('postgres', $step);
	wait_for_audit_catchup($up, $down, 'sub');
	push @checkpoints, [ $up->safe_psql('postgres', 'SELECT now()'), upstream_table() ];
}
$up->safe_psql('postgres', q{UPDATE t SET v = 'latest' WHERE id = 100});
wait_for_audit_catchup($up, $down, 'sub');
for my $c (0 .. $#checkpoints)
{
	my ($at, $rows) = @{ $checkpoints[$c] };
	is(table_as_of($at), $rows, "table_as_of after step " . ($c + 1) . " is the upstream table then");
}
is(table_as_of('infinity'), upstream_table(), 'table_as_of now is the upstream table now');
is(table_as_of('-infinity'), '[]', 'table_as_of before the audit: no rows');

# A commit time no partition holds (here: its partitions were dropped) gets its partition.
my $id = $down->safe_psql('postgres', q{SELECT subscription_id FROM logical_audit.store WHERE name = 'sub'});
$down->safe_psql('postgres', q{
	DO $$
	DECLARE p record;
	BEGIN
		FOR p IN SELECT partition FROM logical_audit.partitions
		         WHERE subscription = 'sub' AND from_time <= now() AND now() < to_time LOOP
			EXECUTE format('DROP TABLE %s', p.partition);
		END LOOP;
	END $$});
$up->safe_psql('postgres', q{INSERT INTO t VALUES (200, 'new partition', NULL)});
wait_for_audit_catchup($up, $down, 'sub');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.partitions
		WHERE subscription = 'sub' AND from_time <= now() AND now() < to_time}),
	'3', 'the worker made the partitions for a commit time none held');
is( $down->safe_psql('postgres', q{SELECT op || ' ' || (new_row->>'v') FROM logical_audit.change WHERE new_row->>'id' = '200'}),
	'INSERT new partition', 'and audited the change into them');

# Retention: an old partition (rows of a year ago) goes whole; a legal hold keeps it.
$down->safe_psql('postgres', qq{
	SELECT logical_audit.create_partitions($id, now() - interval '1 year');
	INSERT INTO logical_audit.transaction_data (commit_time, commit_lsn, end_lsn, xid, change_count, subscription_id)
	VALUES (now() - interval '1 year', '0/10', '0/20', '1', 0, $id);
	SELECT logical_audit.set_retention('sub', '90 days');
	SELECT logical_audit.set_legal_hold('sub', true);
	SELECT logical_audit.maintain('sub');
});
is( $down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.transaction WHERE commit_time < now() - interval '90 days'}),
	'1', 'a legal hold suspends retention');
$down->safe_psql('postgres', q{
	SELECT logical_audit.set_legal_hold('sub', false);
	SELECT logical_audit.maintain('sub');
});
is( $down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.partitions WHERE to_time <= now() - interval '90 days'}),
	'0', 'retention dropped the partitions older than it');
is( $down->safe_psql('postgres', q{
		SELECT sum(n_tup_del) FROM pg_stat_user_tables WHERE schemaname = 'logical_audit' AND relname LIKE '%_data_%'}),
	'0', 'never by a DELETE');
is($down->safe_psql('postgres', q{SELECT count(*) > 0 FROM logical_audit.change WHERE new_row->>'id' = '200'}), 't',
	'the rows within the retention stay');
is($down->psql('postgres', q{SELECT logical_audit.set_partition_interval('sub', '90 minutes')}), 3,
	'a partition interval that is no whole number of hours or months is an error');
is($down->psql('postgres', q{SELECT logical_audit.set_retention('nosuch', '1 day')}), 3,
	'an unknown subscription is an error');

# A new interval applies to partitions made from then on, cut where those of the old one begin or
# end (retention, off now, keeps them).
$down->safe_psql('postgres', qq{
	SELECT logical_audit.set_retention('sub', NULL);
	SELECT logical_audit.set_partition_interval('sub', '1 day');
	SELECT logical_audit.create_partitions($id, '2020-03-10 12:00+00');
	SELECT logical_audit.set_partition_interval('sub', '1 month');
	SELECT logical_audit.create_partitions($id, t) FROM unnest('{2020-03-05, 2020-03-20, 2020-03-10 18:00}'::timestamptz[]) t;
});
is( $down->safe_psql('postgres', q{
		SELECT string_agg(to_char(from_time AT TIME ZONE 'UTC', 'MM-DD') || '..' || to_char(to_time AT TIME ZONE 'UTC', 'MM-DD'), ' '
		                  ORDER BY from_time)
		FROM logical_audit.partitions WHERE audit_table = 'change' AND from_time < '2021-01-01'}),
	'03-01..03-10 03-10..03-11 03-11..04-01',
	'a month made beside a day partition is cut around it; a time it holds makes none');

done_testing();
