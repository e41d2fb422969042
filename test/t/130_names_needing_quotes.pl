# Publication and subscription names that need quoting (uppercase, spaces, commas, quotes) work,
# because every replication command quotes them; names crafted to inject into a replication
# command only fail, as the names they are, and change nothing upstream.
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

my @publications = ('Upper Case Pub', q{it's a "pub", really}, q{semi;colon'), binary 'true});
$up->safe_psql('postgres', q{
	CREATE TABLE "Mixed Case" (id int PRIMARY KEY, "Odd ""Column""" text);
	CREATE TABLE plain (id int PRIMARY KEY);
	CREATE TABLE third (id int PRIMARY KEY);
	CREATE PUBLICATION "Upper Case Pub" FOR TABLE "Mixed Case";
	CREATE PUBLICATION "it's a ""pub"", really" FOR TABLE plain;
	CREATE PUBLICATION "semi;colon'), binary 'true" FOR TABLE third;
	-- A slot that injected commands could drop.
	SELECT pg_create_logical_replication_slot('victim', 'pgoutput');
});

my $name = q{Sub "with" 'quotes', spaces};
create_subscription($down, $name, $up, publications => \@publications, slot_name => 'odd_names_slot');
is( $up->safe_psql('postgres', "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'odd_names_slot'"),
	'pgoutput', 'the slot is created upstream under its name');

$up->safe_psql('postgres', q{
	INSERT INTO "Mixed Case" VALUES (1, 'x');
	INSERT INTO plain VALUES (2);
	INSERT INTO third VALUES (3);
});
wait_for_audit_catchup($up, $down, $name);
is( $down->safe_psql('postgres', q{
		SELECT string_agg(table_name || ':' || new_row::text, ' ' ORDER BY commit_lsn)
		FROM logical_audit.change WHERE subscription = } . sql_literal($name)),
	q{Mixed Case:{"id": 1, "Odd \"Column\"": "x"} plain:{"id": 2} third:{"id": 3}},
	'every publication with an odd name is streamed, rows recorded under the subscription name');

# Names that would break out of a quoted replication command.
for my $publication (q{x" , "Upper Case Pub}, q{x'); DROP_REPLICATION_SLOT victim; --})
{
	my $err = psql_error($down, 'SELECT logical_audit.create_subscription(name => \'inject_pub\', conninfo => '
		  . sql_literal($up->connstr('postgres')) . ', publications => ' . sql_text_array($publication)
		  . ", slot_name => 'inject_slot', create_slot => true, enabled => true, options => '{}'::jsonb)");
	like($err, qr/ERROR:/, "publication name <$publication> is refused as a missing publication");
}
for my $slot (q{bad"; DROP_REPLICATION_SLOT victim; --}, q{Upper Slot})
{
	my $err = psql_error($down, 'SELECT logical_audit.create_subscription(name => \'inject_slot\', conninfo => '
		  . sql_literal($up->connstr('postgres')) . q{, publications => ARRAY['Upper Case Pub'], slot_name => }
		  . sql_literal($slot) . ", create_slot => true, enabled => true, options => '{}'::jsonb)");
	like($err, qr/ERROR:/, "invalid slot name <$slot> is refused");
}
is( $up->safe_psql('postgres', 'SELECT string_agg(slot_name, \',\' ORDER BY slot_name) FROM pg_replication_slots'),
	'odd_names_slot,victim', 'upstream slots unchanged by the attempts');
is($down->safe_psql('postgres', "SELECT count(*) FROM logical_audit.status WHERE name LIKE 'inject%'"), '0',
	'no subscription left by the attempts');

$down->safe_psql('postgres', 'SELECT logical_audit.stop(' . sql_literal($name) . ')');
$down->safe_psql('postgres', 'SELECT logical_audit.drop_subscription(' . sql_literal($name) . ', drop_slot => true)');
is($up->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'odd_names_slot'"), '0',
	'drop_subscription(drop_slot => true) drops the slot upstream');

done_testing();
