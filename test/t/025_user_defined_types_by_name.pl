# User-defined types (enum, domain, composite, arrays of them) are mapped by name through the
# upstream's Type messages when a type of the same schema and name exists downstream, so that
# new_row equals the upstream's to_jsonb; a type missing downstream is kept as its text form.
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

my $shared_types = q{
	CREATE TYPE mood AS ENUM ('calm', 'angry');
	CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
	CREATE TYPE pair AS (a integer, b text);
};
# Created on both sides, with different oids downstream (the extra type shifts them).
$down->safe_psql('postgres', "CREATE TYPE padding AS (x int);\n$shared_types");
$up->safe_psql('postgres', $shared_types . q{
	CREATE TYPE upstream_only AS (x numeric, y text);
	CREATE TABLE udt (id int PRIMARY KEY, m mood, d posint, p pair, pa pair[], ms mood[], u upstream_only);
	CREATE PUBLICATION audit_pub FOR TABLE udt;
});
create_subscription($down, 'sub', $up);

$up->safe_psql('postgres', q{
	INSERT INTO udt VALUES (1, 'angry', 42, ROW(7, 'seven'), ARRAY[ROW(1, 'x')::pair, ROW(2, NULL)::pair],
		'{calm,angry}', ROW(1.50, 'a "quoted" text'));
	INSERT INTO udt (id) VALUES (2);
});
wait_for_audit_catchup($up, $down, 'sub');

for my $column (qw(id m d p pa ms))
{
	for my $id (1, 2)
	{
		my $expected = upstream_value($up, "SELECT to_jsonb(udt.$column) FROM udt WHERE id = $id");
		jsonb_is($down,
			"SELECT new_row->'$column' FROM logical_audit.change WHERE op = 'INSERT' AND new_row->>'id' = '$id'",
			$expected eq '' ? 'null' : $expected,
			"row $id: column $column of a type that exists downstream matches to_jsonb");
	}
}

my $text_form = upstream_value($up, "SELECT to_jsonb(u::text) FROM udt WHERE id = 1");
jsonb_is($down, q{SELECT new_row->'u' FROM logical_audit.change WHERE op = 'INSERT' AND new_row->>'id' = '1'},
	$text_form, 'a type missing downstream is kept as its text form');
jsonb_is($down, q{SELECT new_row->'u' FROM logical_audit.change WHERE op = 'INSERT' AND new_row->>'id' = '2'},
	'null', 'a NULL of a type missing downstream is JSON null');

done_testing();
