# Under the default replica identity the upstream sends no old row for an UPDATE that keeps the
# key: changed_columns then comes from the latest audited image of the row (the new_row of its
# latest change), and so do the unchanged TOAST values pgoutput does not send, which stay named in
# unchanged_toast. The image is found whether the earlier change is in the same upstream
# transaction (still buffered, or already inserted by this local transaction), in an earlier
# upstream transaction of the same local transaction, or committed before a worker restart; a key
# change looks the image up by the old key. Without an image changed_columns is NULL and the TOAST
# values stay absent. Under REPLICA IDENTITY FULL the old row answers both.
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
	CREATE TABLE acct (id int PRIMARY KEY, name text, qty int, note text);
	CREATE TABLE by_full (id int PRIMARY KEY, v text, n int, body text);
	ALTER TABLE by_full REPLICA IDENTITY FULL;
	-- Out of line whatever their size: an update that leaves them alone does not send them.
	ALTER TABLE acct ALTER COLUMN note SET STORAGE EXTERNAL;
	ALTER TABLE by_full ALTER COLUMN body SET STORAGE EXTERNAL;
	CREATE TABLE filler (id int);
	CREATE PUBLICATION audit_pub FOR TABLE acct, by_full, filler;
	-- Before the subscription: no audited image of this row.
	INSERT INTO acct VALUES (6, 'old', 1, repeat('n', 5000));
});
create_subscription($down, 'sub', $up);

# The UPDATE rows of one row of a table in upstream order, one line each:
# "changed_columns unchanged_toast note-or-body", where the last is the TOASTed column's length in
# new_row, or 'absent'.
sub updates_of
{
	my ($table, $id) = @_;
	my $column = $table eq 'acct' ? 'note' : 'body';
	return $down->safe_psql('postgres', qq{
		SELECT coalesce('{' || array_to_string(changed_columns, ',') || '}', 'NULL') || ' '
		       || coalesce('{' || array_to_string(unchanged_toast, ',') || '}', 'NULL') || ' '
		       || coalesce(length(new_row->>'$column')::text, CASE WHEN new_row ? '$column' THEN 'null' ELSE 'absent' END)
		FROM logical_audit.change
		WHERE subscription = 'sub' AND table_name = '$table' AND op = 'UPDATE' AND (new_row->>'id')::int = $id
		ORDER BY commit_lsn, ordinal});
}

# Same upstream transaction, the earlier change still buffered in the writer.
$up->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO acct VALUES (1, 'a', 1, 'short');
	UPDATE acct SET name = 'a2' WHERE id = 1;
	UPDATE acct SET qty = 2, name = 'a2' WHERE id = 1;
	UPDATE acct SET name = name WHERE id = 1;
	COMMIT;
});
# Same upstream transaction, the earlier change already inserted (more than a batch in between):
# the lookup reads the local transaction's own uncommitted rows through the index.
$up->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO acct VALUES (2, 'b', 1, repeat('x', 5000));
	INSERT INTO filler SELECT generate_series(1, 1500);
	UPDATE acct SET qty = 5 WHERE id = 2;
	COMMIT;
});
$up->safe_psql('postgres', q{INSERT INTO acct VALUES (3, 'c', 1, 'short')});
wait_for_audit_catchup($up, $down, 'sub');

is(updates_of('acct', 1), "{name} NULL 5\n{qty} NULL 5\n{} NULL 5",
	'same upstream transaction: changed_columns from the buffered image (none for a no-op update)');
is(updates_of('acct', 2), '{qty} {note} 5000',
	'same upstream transaction after a batch insert: image read back from the index, TOAST value filled');

# A worker restart, then a backlog of small upstream transactions, many of which the new worker
# writes in one local transaction: each pair's UPDATE finds the INSERT of an earlier upstream
# transaction, and row 3's UPDATE finds the change committed before the restart.
my $pid = wait_for_worker_pid($down, 'sub');
$down->safe_psql('postgres', "SELECT logical_audit.stop('sub')");
wait_for_state($down, 'sub', 'stopped');
$up->safe_psql('postgres', q{UPDATE acct SET qty = 3 WHERE id = 3});
for my $id (101 .. 150)
{
	$up->safe_psql('postgres', "INSERT INTO acct VALUES ($id, 'p', 1, repeat('p', 3000))");
	$up->safe_psql('postgres', "UPDATE acct SET name = 'q' WHERE id = $id");
}
$down->safe_psql('postgres', "SELECT logical_audit.start('sub')");
wait_for_state($down, 'sub', 'streaming');
isnt(wait_for_worker_pid($down, 'sub'), $pid, 'a new worker process');
wait_for_audit_catchup($up, $down, 'sub');

is(updates_of('acct', 3), '{qty} NULL 5', 'after a worker restart: image committed by the earlier worker');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE changed_columns = '{name}' AND unchanged_toast = '{note}'
		                        AND length(new_row->>'note') = 3000)
		FROM logical_audit.change
		WHERE table_name = 'acct' AND op = 'UPDATE' AND (new_row->>'id')::int BETWEEN 101 AND 150}),
	'50', 'earlier upstream transactions: every UPDATE got changed_columns and its TOAST value');
cmp_ok(
	$down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.change_data i
		JOIN logical_audit.change_data u ON u.prev_lsn = i.commit_lsn AND u.prev_ordinal = i.ordinal
		JOIN logical_audit.relation r ON r.id = i.relation_id
		WHERE r.table_name = 'acct' AND i.op = 'I' AND u.op = 'U'
		  AND (i.new_row->>'id')::int BETWEEN 101 AND 150 AND i.xmin = u.xmin AND i.commit_lsn < u.commit_lsn}),
	'>', 0, 'some of those pairs were written in one local transaction');

# Key changes: the image is looked up by the old key, and the next update finds the moved row.
$up->safe_psql('postgres', q{
	INSERT INTO acct VALUES (4, 'd', 1, repeat('k', 5000));
	UPDATE acct SET id = 40, qty = 9 WHERE id = 4;
});
$up->safe_psql('postgres', q{UPDATE acct SET name = 'd2' WHERE id = 40});
# Unchanged TOAST over several updates, and no image for the row that predates the subscription:
# its first UPDATE has no changed_columns and no TOAST value, the next one compares with it.
$up->safe_psql('postgres', q{
	UPDATE acct SET qty = 2 WHERE id = 6;
	UPDATE acct SET qty = 3 WHERE id = 6;
	UPDATE acct SET name = 'b2' WHERE id = 2;
});
wait_for_audit_catchup($up, $down, 'sub');

is(updates_of('acct', 40), "{id,qty} {note} 5000\n{name} {note} 5000",
	'key change: image found under the old key, then under the new one');
is(updates_of('acct', 6), "NULL {note} absent\n{qty} {note} absent",
	'no image: changed_columns NULL and the TOAST value absent; the next update compares with that row');
is(updates_of('acct', 2), "{qty} {note} 5000\n{name} {note} 5000", 'a back-filled value is the next image');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(i.row_key::text || ' ' || (i.image IS NOT NULL), ', ' ORDER BY i.row_key::text)
		FROM logical_audit.row_image i JOIN logical_audit.relation r ON r.id = i.relation_id
		WHERE r.table_name = 'acct' AND i.row_key->>'id' IN ('4', '40')}),
	'{"id": 40} true, {"id": 4} false', 'the latest image: none under the old key, the row under the new one');

# REPLICA IDENTITY FULL: changed_columns from the old row, the TOAST value from it too.
$up->safe_psql('postgres', q{
	INSERT INTO by_full VALUES (1, 'x', 1, repeat('f', 5000));
	UPDATE by_full SET n = 2 WHERE id = 1;
	UPDATE by_full SET v = 'y', body = 'short' WHERE id = 1;
});
wait_for_audit_catchup($up, $down, 'sub');
is(updates_of('by_full', 1), "{n} {body} 5000\n{v,body} NULL 5",
	'FULL: changed_columns and TOAST values from the old row');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.row_image i JOIN logical_audit.relation r ON r.id = i.relation_id
		WHERE r.table_name = 'by_full'}),
	'0', 'FULL: no image');

done_testing();
