# old_row follows the upstream table's replica identity: the full old row under FULL, the key
# columns under DEFAULT (primary key) and USING INDEX, NULL when the upstream sends no old row
# (an update that keeps the key, or NOTHING). changed_columns names the columns whose value
# changed when the full old row is known.
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
	CREATE TABLE by_default (id int PRIMARY KEY, v text, n int);
	CREATE TABLE by_full (id int PRIMARY KEY, v text, n int);
	ALTER TABLE by_full REPLICA IDENTITY FULL;
	CREATE TABLE by_index (id int NOT NULL, code text NOT NULL, v text);
	CREATE UNIQUE INDEX by_index_key ON by_index (code, id);
	ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_key;
	CREATE TABLE by_nothing (id int, v text);
	ALTER TABLE by_nothing REPLICA IDENTITY NOTHING;
	CREATE PUBLICATION audit_pub FOR TABLE by_default, by_full, by_index;
	-- A table without identity may only be published for inserts.
	CREATE PUBLICATION inserts_pub FOR TABLE by_nothing WITH (publish = 'insert');
});
create_subscription($down, 'sub', $up, publications => [ 'audit_pub', 'inserts_pub' ]);

$up->safe_psql('postgres', q{
	INSERT INTO by_default VALUES (1, 'a', 1), (2, 'b', 2);
	UPDATE by_default SET v = 'a2' WHERE id = 1;
	UPDATE by_default SET id = 20, n = 22 WHERE id = 2;
	DELETE FROM by_default WHERE id = 1;

	INSERT INTO by_full VALUES (1, 'a', 1), (2, 'b', NULL);
	UPDATE by_full SET v = 'a2', n = 10 WHERE id = 1;
	UPDATE by_full SET n = 5 WHERE id = 2;
	UPDATE by_full SET v = v WHERE id = 2;
	DELETE FROM by_full WHERE id = 1;

	INSERT INTO by_index VALUES (1, 'x', 'one');
	UPDATE by_index SET v = 'uno' WHERE id = 1;
	UPDATE by_index SET code = 'y' WHERE id = 1;
	DELETE FROM by_index WHERE id = 1;

	INSERT INTO by_nothing VALUES (1, 'n');
	UPDATE by_nothing SET v = 'not published';
	DELETE FROM by_nothing;
});
wait_for_audit_catchup($up, $down, 'sub');

# The changes of one table in upstream order, one "op old new changed" line each.
sub changes_of
{
	my ($table) = @_;
	return $down->safe_psql('postgres', qq{
		SELECT op || ' ' || coalesce(old_row::text, '-') || ' ' || coalesce(new_row::text, '-')
		FROM logical_audit.change WHERE subscription = 'sub' AND table_name = '$table'
		ORDER BY commit_lsn, ordinal});
}

# The same lines built from jsonb literals, in jsonb's canonical text form.
sub expected_lines
{
	my @lines;
	for my $change (@_)
	{
		my ($op, $old, $new) = @$change;
		my $sql = sprintf("SELECT %s || ' ' || coalesce(%s::jsonb::text, '-') || ' ' || coalesce(%s::jsonb::text, '-')",
			sql_literal($op), sql_literal($old), sql_literal($new));
		push @lines, $down->safe_psql('postgres', $sql);
	}
	return join("\n", @lines);
}

is(changes_of('by_default'), expected_lines(
		[ 'INSERT', undef, '{"id": 1, "v": "a", "n": 1}' ],
		[ 'INSERT', undef, '{"id": 2, "v": "b", "n": 2}' ],
		[ 'UPDATE', undef, '{"id": 1, "v": "a2", "n": 1}' ],
		[ 'UPDATE', '{"id": 2}', '{"id": 20, "v": "b", "n": 22}' ],
		[ 'DELETE', '{"id": 1}', undef ]),
	'DEFAULT: no old row when the key is kept, the old key when it changes or the row is deleted');

is(changes_of('by_full'), expected_lines(
		[ 'INSERT', undef, '{"id": 1, "v": "a", "n": 1}' ],
		[ 'INSERT', undef, '{"id": 2, "v": "b", "n": null}' ],
		[ 'UPDATE', '{"id": 1, "v": "a", "n": 1}', '{"id": 1, "v": "a2", "n": 10}' ],
		[ 'UPDATE', '{"id": 2, "v": "b", "n": null}', '{"id": 2, "v": "b", "n": 5}' ],
		[ 'UPDATE', '{"id": 2, "v": "b", "n": 5}', '{"id": 2, "v": "b", "n": 5}' ],
		[ 'DELETE', '{"id": 1, "v": "a2", "n": 10}', undef ]),
	'FULL: the whole old row on update and delete');

is(changes_of('by_index'), expected_lines(
		[ 'INSERT', undef, '{"id": 1, "code": "x", "v": "one"}' ],
		[ 'UPDATE', undef, '{"id": 1, "code": "x", "v": "uno"}' ],
		[ 'UPDATE', '{"id": 1, "code": "x"}', '{"id": 1, "code": "y", "v": "uno"}' ],
		[ 'DELETE', '{"id": 1, "code": "y"}', undef ]),
	'USING INDEX: the index columns as the old key');

is(changes_of('by_nothing'), expected_lines([ 'INSERT', undef, '{"id": 1, "v": "n"}' ]),
	'NOTHING: inserts audited, no old row');

is( $down->safe_psql('postgres', q{
		SELECT string_agg(coalesce(nullif(array_to_string(ARRAY(SELECT unnest(changed_columns) ORDER BY 1), ','), ''), '-'), ' '
		                  ORDER BY commit_lsn, ordinal)
		FROM logical_audit.change WHERE table_name = 'by_full' AND op = 'UPDATE'}),
	'n,v n -',
	'FULL: changed_columns names the columns whose value changed (none for a no-op update)');

done_testing();
