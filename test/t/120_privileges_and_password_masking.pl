# A password in the conninfo is used to connect but never shown: not by status, not by errors of
# create_subscription, not by the worker's errors in status or in the server log. The functions
# and the subscription catalog are closed to roles without privileges; a role the superuser grants
# the functions to can use them.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $password = 'Pa55-w0rd-XYZZY';
my $wrong_password = 'Wr0ng-QWERTY';
my $secret_re = qr/XYZZY|QWERTY/;

my $up = new_upstream('upstream');
# The server log shows only what the server says, not the test's own statements.
my $down = new_downstream('downstream', conf => [ 'log_statement = none', 'log_min_error_statement = panic' ]);

$up->safe_psql('postgres', qq{
	CREATE ROLE auditor LOGIN REPLICATION PASSWORD '$password';
	CREATE TABLE t (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
open my $hba, '>', $up->data_dir . '/pg_hba.conf' or die "pg_hba.conf: $!";
print $hba "local all auditor scram-sha-256\n", "local replication auditor scram-sha-256\n",
  "local all all trust\n", "local replication all trust\n";
close $hba;
$up->reload;

my $conninfo = $up->connstr('postgres') . " user=auditor password=$password";
create_subscription($down, 'sub', $up, conninfo => $conninfo);
$up->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
wait_for_audit_catchup($up, $down, 'sub');
pass('the subscription connects with the password');

is($down->safe_psql('postgres', "SELECT count(*) FROM logical_audit.status s WHERE s::text ~ 'XYZZY'"), '0',
	'status never shows the password');

my $err = psql_error($down, 'SELECT logical_audit.create_subscription(name => \'wrong\', conninfo => '
	  . sql_literal($up->connstr('postgres') . " user=auditor password=$wrong_password")
	  . ", publications => ARRAY['audit_pub'], slot_name => NULL, create_slot => true, enabled => true, "
	  . "options => '{}'::jsonb)");
like($err, qr/authentication failed/, 'a wrong password is refused at create');
unlike($err, $secret_re, '... and the error does not show it');

# The worker's own error: the password changes upstream, the worker reconnects and fails.
$up->safe_psql('postgres', q{ALTER ROLE auditor PASSWORD 'changed upstream'});
my $error_time = status_field($down, 'sub', 'last_error_time');
$down->safe_psql('postgres', "SELECT logical_audit.stop('sub'); SELECT logical_audit.start('sub');");
wait_for_new_error($down, 'sub', $error_time);
like(status_field($down, 'sub', 'last_error'), qr/authentication failed/, 'status shows why the worker cannot connect');
is($down->safe_psql('postgres', "SELECT count(*) FROM logical_audit.status s WHERE s::text ~ 'XYZZY'"), '0',
	'... without the password');
unlike(slurp_file($down->logfile), $secret_re, 'the downstream server log never shows a password');

# Privileges.
$down->safe_psql('postgres', 'CREATE ROLE alice LOGIN');
my $as_alice = $down->connstr('postgres') . ' user=alice';
for my $sql (
	"SELECT logical_audit.create_subscription(name => 'mine', conninfo => 'dbname=postgres', "
	  . "publications => ARRAY['audit_pub'], slot_name => NULL, create_slot => true, enabled => true, options => '{}'::jsonb)",
	"SELECT logical_audit.stop('sub')",
	"SELECT logical_audit.start('sub')",
	"SELECT logical_audit.drop_subscription('sub', drop_slot => true)",
	'SELECT conninfo FROM logical_audit.subscription')
{
	like(psql_error($down, $sql, connstr => $as_alice), qr/ERROR:  42501: /, "denied to a plain role: $sql");
}
is(status_field($down, 'sub', 'enabled'), 't', 'the subscription was left alone');

$down->safe_psql('postgres', q{
	GRANT USAGE ON SCHEMA logical_audit TO alice;
	GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA logical_audit TO alice;
});
$down->safe_psql('postgres', "SELECT logical_audit.stop('sub')", connstr => $as_alice);
is(status_field($down, 'sub', 'enabled'), 'f', 'a role granted the functions can stop');
$down->safe_psql('postgres', "SELECT logical_audit.start('sub')", connstr => $as_alice);
is(status_field($down, 'sub', 'enabled'), 't', '... and start');
like(psql_error($down, 'SELECT conninfo FROM logical_audit.subscription', connstr => $as_alice),
	qr/ERROR:  42501: /, 'the catalog with the conninfo stays closed to it');

done_testing();
