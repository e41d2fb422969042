# Several subscriptions run at once, each with its own worker: to two upstream servers and to two
# databases of one of them. Each records its own upstream's changes under its own name, and
# stopping one leaves the others streaming.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up1 = new_upstream('upstream1');
my $up2 = new_upstream('upstream2');
my $down = new_downstream('downstream');

my $schema = q{
	CREATE TABLE t (id int PRIMARY KEY, origin text);
	CREATE PUBLICATION audit_pub FOR TABLE t;
};
$up1->safe_psql('postgres', $schema);
$up2->safe_psql('postgres', 'CREATE DATABASE crm');
$up2->safe_psql('postgres', $schema);
$up2->safe_psql('crm', $schema);

my %subs = (
	one => [ $up1, 'postgres' ],
	two => [ $up2, 'postgres' ],
	crm => [ $up2, 'crm' ]);
for my $name (sort keys %subs)
{
	my ($up, $db) = @{ $subs{$name} };
	create_subscription($down, $name, $up, dbname => $db, slot_name => "slot_$name");
}
is( $down->safe_psql('postgres', q{SELECT count(DISTINCT pid) FROM logical_audit.status WHERE state = 'streaming'}),
	'3', 'three workers stream at once');

for my $name (sort keys %subs)
{
	my ($up, $db) = @{ $subs{$name} };
	$up->safe_psql($db, "INSERT INTO t SELECT g, '$name' FROM generate_series(1, 10) g");
}
for my $name (sort keys %subs)
{
	my ($up, $db) = @{ $subs{$name} };
	wait_for_audit_catchup($up, $down, $name, $db);
	is( $down->safe_psql('postgres', qq{
			SELECT count(*) || ' ' || count(*) FILTER (WHERE new_row->>'origin' = '$name')
			FROM logical_audit.change WHERE subscription = '$name'}),
		'10 10', "$name: its own upstream's rows, under its own name");
}

$down->safe_psql('postgres', "SELECT logical_audit.stop('two')");
$up1->safe_psql('postgres', "INSERT INTO t VALUES (11, 'one')");
$up2->safe_psql('crm', "INSERT INTO t VALUES (11, 'crm')");
$up2->safe_psql('postgres', "INSERT INTO t VALUES (11, 'two')");
wait_for_audit_catchup($up1, $down, 'one');
wait_for_audit_catchup($up2, $down, 'crm', 'crm');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(name || '=' || state, ' ' ORDER BY name) FROM logical_audit.status}),
	'crm=streaming one=streaming two=stopped', 'stopping one subscription leaves the others streaming');
is( $down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.change WHERE subscription = 'two'}),
	'10', 'the stopped one records nothing meanwhile');

$down->safe_psql('postgres', "SELECT logical_audit.start('two')");
wait_for_audit_catchup($up2, $down, 'two');
is( $down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.change WHERE subscription = 'two'}),
	'11', 'and catches up after start()');

done_testing();
