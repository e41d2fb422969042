# Subscription names are limited as PostgreSQL limits identifiers (63 bytes): a longer one is
# refused with a clear error before anything is created; one of 63 bytes connects and audits, and
# the upstream sees it whole as the session's application_name.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table(subscriptions => []);

for my $length (10_000, 64)
{
	my $name = 'n' x $length;
	my $error = psql_error($down, AuditTest::create_subscription_sql($name, $up->connstr('postgres'),
		slot_name => 'long_name_slot'));
	like($error, qr/ERROR:  42622: subscription name "n+\.\.\." is too long/, "a $length-byte name is refused");
	like($error, qr/DETAIL:  The name has $length bytes; subscription names have at most 63/, 'the detail gives the limit');
}
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.subscription'), '0', 'nothing was created');
is($up->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '0', 'no slot was created upstream');

# 63 bytes in 21 three-byte characters: the limit counts bytes.
my $name = "\x{20ac}" x 21;
utf8::encode($name);
create_subscription($down, $name, $up, slot_name => 'long_name_slot');
$up->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
wait_for_audit_catchup($up, $down, $name);
is($down->safe_psql('postgres', 'SELECT subscription, new_row FROM logical_audit.change'), "$name|{\"id\": 1}",
	'a 63-byte name audits');
# (The upstream shows each non-ASCII byte of an application_name as '?'.)
is($up->safe_psql('postgres', q{SELECT application_name FROM pg_stat_replication WHERE application_name <> ''}),
	'?' x 63, 'the upstream sees the whole name');

done_testing();
