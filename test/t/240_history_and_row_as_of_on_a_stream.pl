# history() and row_as_of() over what a real stream audited: after each upstream step the test
# records the upstream's own rows (to_jsonb) and the time; row_as_of at each of those times gives
# back exactly those rows, and history() lists each row's changes in order, following key changes,
# DELETE and TRUNCATE, for a primary key, a REPLICA IDENTITY USING INDEX key and a FULL table
# (matched by containment). row_image keeps each keyed row's latest change.
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
	CREATE TABLE item (id int PRIMARY KEY, name text);
	CREATE TABLE by_index (code text NOT NULL, n int NOT NULL, v text);
	CREATE UNIQUE INDEX by_index_key ON by_index (code, n);
	ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_key;
	CREATE TABLE logged (id int, msg text);
	ALTER TABLE logged REPLICA IDENTITY FULL;
	CREATE PUBLICATION audit_pub FOR TABLE item, by_index, logged;
});
create_subscription($down, 'sub', $up);

# The rows followed, by table and key, with the upstream query that finds each one.
my @rows = (
	[ 'item', '{"id": 1}', 'SELECT to_jsonb(t) FROM item t WHERE id = 1' ],
	[ 'item', '{"id": 2}', 'SELECT to_jsonb(t) FROM item t WHERE id = 2' ],
	[ 'by_index', '{"code": "x", "n": 1}', q{SELECT to_jsonb(t) FROM by_index t WHERE code = 'x' AND n = 1} ],
	[ 'by_index', '{"code": "y", "n": 1}', q{SELECT to_jsonb(t) FROM by_index t WHERE code = 'y' AND n = 1} ],
	[ 'logged', '{"id": 1}', 'SELECT to_jsonb(t) FROM logged t WHERE id = 1' ]);

my @steps = (
	q{INSERT INTO item VALUES (1, 'a'); INSERT INTO by_index VALUES ('x', 1, 'one'); INSERT INTO logged VALUES (1, 'x')},
	q{UPDATE item SET name = 'b' WHERE id = 1; UPDATE by_index SET v = 'uno'; UPDATE logged SET msg = 'y'},
	q{UPDATE item SET id = 2 WHERE id = 1; UPDATE by_index SET code = 'y'; UPDATE logged SET id = 4},
	q{INSERT INTO item VALUES (1, 'again'); INSERT INTO logged VALUES (1, 'z')},
	q{DELETE FROM item WHERE id = 2; DELETE FROM by_index; DELETE FROM logged WHERE id = 4},
	q{TRUNCATE item, logged},
	q{INSERT INTO item VALUES (1, 'third'); UPDATE item SET name = 'fourth' WHERE id = 1},
);

# After each step (one upstream transaction): the time, then each followed row as the upstream has it.
my @checkpoints;
for my $step (@steps)
{
	$up->safe_psql('postgres', "BEGIN; $step; COMMIT;");
	my $time = $up->safe_psql('postgres', 'SELECT clock_timestamp()');
	my @states = map { $up->safe_psql('postgres', "SELECT coalesce(($_->[2])::text, 'NULL')") } @rows;
	push @checkpoints, [ $time, @states ];
}
wait_for_audit_catchup($up, $down, 'sub');

for my $c (0 .. $#checkpoints)
{
	my ($time, @states) = @{ $checkpoints[$c] };
	for my $r (0 .. $#rows)
	{
		my ($table, $key) = @{ $rows[$r] };
		my $as_of = $down->safe_psql('postgres',
			sprintf(q{SELECT coalesce(logical_audit.row_as_of('public', %s, %s, %s)::text, 'NULL')},
				sql_literal($table), sql_literal($key), sql_literal($time)));
		is($as_of, $states[$r], "row_as_of $table $key after step " . ($c + 1) . " is the upstream's row then");
	}
}
is( $down->safe_psql('postgres', sprintf(q{SELECT logical_audit.row_as_of('public', 'item', '{"id": 1}', %s) IS NULL},
			sql_literal($up->safe_psql('postgres', q{SELECT '-infinity'::timestamptz})))),
	't', 'row_as_of before the first step: no row');

# Each row's timeline as "op changed_columns" lines, in upstream order.
sub history_of
{
	my ($table, $key) = @_;
	return $down->safe_psql('postgres', sprintf(q{
		SELECT op || ' ' || coalesce(array_to_string(changed_columns, ','), '-')
		FROM logical_audit.history('public', %s, %s) ORDER BY subscription, commit_lsn, ordinal},
		sql_literal($table), sql_literal($key)));
}
is(history_of('item', '{"id": 1}'),
	join("\n", 'INSERT -', 'UPDATE name', 'UPDATE id', 'INSERT -', 'TRUNCATE -', 'INSERT -', 'UPDATE name'),
	'history of item 1: the move to key 2 ends a life, the TRUNCATE another');
is(history_of('item', '{"id": 2}'), join("\n", 'UPDATE id', 'DELETE -'), 'history of item 2: from the key change to the DELETE');
is(history_of('by_index', '{"code": "x", "n": 1}'), join("\n", 'INSERT -', 'UPDATE v', 'UPDATE code'),
	'history of a USING INDEX key');
is(history_of('logged', '{"id": 1}'), join("\n", 'INSERT -', 'UPDATE msg', 'UPDATE id', 'INSERT -', 'TRUNCATE -'),
	'history of a FULL table row, by containment');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(commit_time::text || xid::text, ',') IS NOT NULL AND count(*) = count(commit_time)
		FROM logical_audit.history('public', 'item', '{"id": 1}')}),
	't', 'history rows carry their transaction');

is( $down->safe_psql('postgres', q{
		SELECT string_agg(r.table_name || ' ' || i.row_key::text || ' ' || coalesce(i.image::text, '-'), E'\n'
		                  ORDER BY r.table_name, i.row_key::text)
		FROM logical_audit.row_image i JOIN logical_audit.relation r ON r.id = i.relation_id
		WHERE r.table_name <> 'item'}),
	join("\n", 'by_index {"n": 1, "code": "x"} -', 'by_index {"n": 1, "code": "y"} -'),
	'latest images: none left by the key change and the DELETE, none for a FULL table');

done_testing();
