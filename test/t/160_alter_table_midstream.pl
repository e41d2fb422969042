# A table whose columns change upstream while it is audited (ADD, DROP, RENAME, ALTER TYPE,
# RENAME TABLE; between transactions and inside one; while the worker streams and while it is
# stopped) is audited with its new shape from the next change on: every image equals the
# upstream's to_jsonb of the row at the time of the change.
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
	CREATE TABLE t (id int PRIMARY KEY, a int, b text);
	CREATE PUBLICATION audit_pub FOR TABLE t;
	-- What each audited image should be: to_jsonb of the row right after each change.
	CREATE TABLE expected (seq serial, image jsonb);
});
create_subscription($down, 'sub', $up);

# SQL that records the current image of row $id as the next expected audit image.
my $seq = 0;
sub expect
{
	my ($table, $id) = @_;
	$seq++;
	return "INSERT INTO expected (image) SELECT to_jsonb(x) FROM $table x WHERE id = $id;";
}

# Runs upstream SQL, with TimeZone UTC as the worker renders timestamptz.
sub upstream
{
	my ($sql) = @_;
	$up->safe_psql('postgres', "SET TimeZone = 'UTC';\n$sql");
}

upstream("INSERT INTO t VALUES (1, 10, 'one');" . expect('t', 1));
upstream("ALTER TABLE t ADD COLUMN c timestamptz DEFAULT '2024-01-01 00:00+00';"
	  . "INSERT INTO t (id, a, b) VALUES (2, 20, 'two');" . expect('t', 2));
upstream('UPDATE t SET a = 11 WHERE id = 1;' . expect('t', 1));
upstream('ALTER TABLE t DROP COLUMN b; INSERT INTO t VALUES (3, 30);' . expect('t', 3));
upstream('ALTER TABLE t RENAME COLUMN a TO amount; UPDATE t SET amount = 31 WHERE id = 3;' . expect('t', 3));
upstream('ALTER TABLE t ALTER COLUMN amount TYPE numeric(10,2); INSERT INTO t VALUES (4, 40.5);' . expect('t', 4));
wait_for_audit_catchup($up, $down, 'sub');

# Inside one transaction: rows before and after a change of shape.
upstream('BEGIN; INSERT INTO t VALUES (5, 50);' . expect('t', 5) . 'ALTER TABLE t ADD COLUMN d text[];'
	  . "INSERT INTO t VALUES (6, 60, NULL, '{x,y}');" . expect('t', 6) . 'ALTER TABLE t DROP COLUMN c;'
	  . "INSERT INTO t VALUES (7, 70, '{z}');" . expect('t', 7) . 'COMMIT;');

# While the worker is stopped: the changes of shape wait in the slot with the rows.
$down->safe_psql('postgres', "SELECT logical_audit.stop('sub')");
upstream('ALTER TABLE t ADD COLUMN e boolean; INSERT INTO t VALUES (8, 80, NULL, true);' . expect('t', 8));
upstream('ALTER TABLE t RENAME TO renamed; UPDATE renamed SET e = false WHERE id = 8;' . expect('renamed', 8));
$down->safe_psql('postgres', "SELECT logical_audit.start('sub')");
wait_for_audit_catchup($up, $down, 'sub');

my @expected = split /\n/, $up->safe_psql('postgres', 'SELECT image FROM expected ORDER BY seq');
my @actual = split /\n/, $down->safe_psql('postgres',
	"SELECT new_row FROM logical_audit.change WHERE op IN ('INSERT', 'UPDATE') ORDER BY commit_lsn, ordinal");
is(scalar(@actual), $seq, "$seq changes audited");
for my $i (0 .. $#expected)
{
	jsonb_is($down, 'SELECT ' . sql_literal($actual[$i] // 'null') . '::jsonb', $expected[$i], 'change ' . ($i + 1) . ' has the shape of its time');
}
is( $down->safe_psql('postgres', "SELECT table_name FROM logical_audit.change ORDER BY commit_lsn DESC, ordinal DESC LIMIT 1"),
	'renamed', 'a renamed table is audited under its new name');

done_testing();
