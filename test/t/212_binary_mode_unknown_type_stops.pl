# In binary mode a value of a user type that exists only upstream cannot be read: the worker stops
# at that change with an ERROR naming the relation, the column and the type (status.last_error),
# records nothing from there on, and never records a guess. Once the type is created downstream
# the change and everything after it are audited.
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
	CREATE TYPE only_upstream AS ENUM ('here', 'there');
	CREATE TABLE plain (id int PRIMARY KEY);
	CREATE TABLE odd (id int PRIMARY KEY, place only_upstream);
	CREATE PUBLICATION audit_pub FOR TABLE plain, odd;
});
create_subscription($down, 'sub', $up, options => '{"binary": true}');

$up->safe_psql('postgres', 'INSERT INTO plain VALUES (1)');
wait_for_audit_catchup($up, $down, 'sub');
my $error_time = status_field($down, 'sub', 'last_error_time');

$up->safe_psql('postgres', q{INSERT INTO odd VALUES (1, 'there')});
$up->safe_psql('postgres', 'INSERT INTO plain VALUES (2)');

$error_time = wait_for_new_error($down, 'sub', $error_time);
my $last_error = status_field($down, 'sub', 'last_error');
note("last_error: $last_error");
like($last_error, qr/\bpublic\.only_upstream\b/, 'status.last_error names the type');
like($last_error, qr/column "place"/, 'status.last_error names the column');
like($last_error, qr/relation "public\.odd"/, 'status.last_error names the relation');
like($last_error, qr/does not exist in this database/, 'status.last_error says why');

# A second failure: the worker retried from the same place and recorded nothing in between.
wait_for_new_error($down, 'sub', $error_time);
is( $down->safe_psql('postgres',
		q{SELECT string_agg(table_name || ':' || (new_row->>'id'), ',' ORDER BY commit_lsn, ordinal)
		  FROM logical_audit.change}),
	'plain:1', 'nothing from the failed change on is recorded');

$down->safe_psql('postgres', q{CREATE TYPE only_upstream AS ENUM ('here', 'there')});
wait_for_state($down, 'sub', 'streaming');
wait_for_audit_catchup($up, $down, 'sub');
is( $down->safe_psql('postgres',
		q{SELECT string_agg(table_name || ':' || new_row::text, ',' ORDER BY commit_lsn, ordinal)
		  FROM logical_audit.change}),
	'plain:{"id": 1},odd:{"id": 1, "place": "there"},plain:{"id": 2}',
	'with the type created downstream, the change and the later ones are audited once, in order');

done_testing();
