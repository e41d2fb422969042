# Without logical_audit in shared_preload_libraries the extension can be created (the SQL decoder
# works), but creating a subscription fails with a hint saying what to configure.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
my $down = new_downstream('downstream', preload => 0);

my $err = psql_error($down, 'SELECT logical_audit.create_subscription(name => \'sub\', conninfo => '
	  . sql_literal($up->connstr('postgres'))
	  . ", publications => ARRAY['audit_pub'], slot_name => NULL, create_slot => true, enabled => true, "
	  . "options => '{}'::jsonb)");
like($err, qr/ERROR:/, 'create_subscription fails without the preloaded library');
like($err, qr/HINT:.*shared_preload_libraries/, 'the hint names shared_preload_libraries');
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.subscription'), '0', 'no subscription is left');
is($up->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '0', 'no slot is created upstream');

done_testing();
