# TRUNCATE of several tables in one statement (listed, or reached through CASCADE) is audited as
# one TRUNCATE change row per published table, in one transaction row; tables outside the
# publication are not audited.
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
	CREATE SCHEMA sales;
	CREATE TABLE a (id int PRIMARY KEY);
	CREATE TABLE sales.b (id serial PRIMARY KEY);
	CREATE TABLE c (id int PRIMARY KEY, a_id int REFERENCES a);
	CREATE TABLE unpublished (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE a, sales.b, c;
	INSERT INTO a VALUES (1), (2);
	INSERT INTO sales.b DEFAULT VALUES;
	INSERT INTO c VALUES (1, 1);
	INSERT INTO unpublished VALUES (1);
});
create_subscription($down, 'sub', $up);

my $xid_list = $up->safe_psql('postgres',
	q{BEGIN; TRUNCATE c, sales.b, unpublished RESTART IDENTITY; SELECT pg_current_xact_id(); COMMIT;});
my $xid_cascade = $up->safe_psql('postgres',
	q{BEGIN; INSERT INTO a VALUES (3); TRUNCATE a CASCADE; SELECT pg_current_xact_id(); COMMIT;});
wait_for_audit_catchup($up, $down, 'sub');

# The changes of one upstream transaction: "op schema.table old new" per line, in order.
sub changes_of
{
	my ($xid) = @_;
	return $down->safe_psql('postgres', qq{
		SELECT c.op || ' ' || c.schema_name || '.' || c.table_name || ' '
		       || coalesce(c.old_row::text, '-') || ' ' || coalesce(c.new_row::text, '-')
		FROM logical_audit.change c JOIN logical_audit.transaction t USING (subscription, commit_lsn)
		WHERE t.xid = '$xid'::xid8 ORDER BY c.ordinal});
}

my @listed = split /\n/, changes_of($xid_list);
is(scalar(@listed), 2, 'two published tables truncated: two change rows');
is_deeply([ sort @listed ], [ 'TRUNCATE public.c - -', 'TRUNCATE sales.b - -' ],
	'one TRUNCATE row per published table, with its schema, no row images');
is( $down->safe_psql('postgres', "SELECT change_count FROM logical_audit.transaction WHERE xid = '$xid_list'::xid8"),
	'2', 'change_count counts each truncated table');

my @cascade = split /\n/, changes_of($xid_cascade);
is($cascade[0], 'INSERT public.a - {"id": 3}', 'the insert before the truncate comes first');
is_deeply([ sort @cascade[ 1 .. $#cascade ] ], [ 'TRUNCATE public.a - -', 'TRUNCATE public.c - -' ],
	'TRUNCATE ... CASCADE: a row for the table named and for the table reached by the cascade');
is( $down->safe_psql('postgres',
		"SELECT count(*) FROM logical_audit.change WHERE table_name = 'unpublished'"),
	'0', 'a table outside the publication is not audited');

done_testing();
