# Fault matrix: a published table is dropped upstream while the worker streams (the publication
# is FOR ALL TABLES, so the table leaves it only with the DROP). Every change made to it before the
# drop is audited once; changes to another table after the drop are audited too, and the worker
# streams on without an error.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE doomed (id int PRIMARY KEY);
	CREATE TABLE other (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR ALL TABLES;
});
create_subscription($down, 'sub', $up);

$up->safe_psql('postgres', q{
	INSERT INTO doomed VALUES (1);
	BEGIN; INSERT INTO doomed VALUES (2); INSERT INTO other VALUES (1); COMMIT;
	INSERT INTO doomed SELECT generate_series(3, 100);
});
# What the dropped table held, to compare the audit with once it is gone.
my $doomed = upstream_rows($up, 'doomed');
# Mid-stream: no wait for the worker, which decodes the drop between the changes.
$up->safe_psql('postgres', q{
	INSERT INTO other VALUES (2);
	DROP TABLE doomed;
	INSERT INTO other VALUES (3);
	BEGIN; INSERT INTO other SELECT generate_series(4, 50); COMMIT;
});
wait_for_audit_catchup($up, $down, 'sub');

audit_is_exactly_once($down, 'sub', $doomed, upstream_rows($up, 'other'));
is($up->safe_psql('postgres', q{SELECT to_regclass('doomed') IS NULL}), 't', 'the table is gone upstream');
is(status_field($down, 'sub', 'last_error'), '', 'no error');
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
