# create_subscription refuses, with a clear error and errcode and without leaving anything
# behind, a malformed conninfo, an unreachable upstream, a missing publication, a missing slot
# (create_slot => false), unknown options and a duplicate name; start/stop/drop of an unknown
# name fail the same way. A slot dropped upstream under a running subscription shows in
# status.last_error with state waiting_retry, and the worker never advances meanwhile.
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
	CREATE TABLE t (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
my $good = $up->connstr('postgres');

# Calls create_subscription with the given arguments, expecting an error.
sub create_fails
{
	my ($what, $name, $conninfo, $publications, $slot, $create_slot, $options, $error_like) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $err = psql_error($down, sprintf(
			"SELECT logical_audit.create_subscription(name => %s, conninfo => %s, publications => %s, "
			  . "slot_name => %s, create_slot => %s, enabled => true, options => %s::jsonb)",
			sql_literal($name), sql_literal($conninfo), sql_text_array(@$publications), sql_literal($slot),
			$create_slot ? 'true' : 'false', sql_literal($options)));
	like($err, $error_like, "$what: clear error");
	is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.status WHERE name = ' . sql_literal($name)),
		'0', "$what: no subscription left behind");
	return $err;
}

create_fails('malformed conninfo', 'bad1', 'this is not a conninfo', ['audit_pub'], undef, 1, '{}',
	qr/ERROR:  \w{5}: .*(conninfo|connection|invalid|missing)/i);
create_fails('unreachable upstream', 'bad2', 'host=' . $up->host . ' port=1 dbname=postgres', ['audit_pub'], undef, 1,
	'{}', qr/ERROR:  08\w{3}: .*(connect|connection)/i);
create_fails('missing publication', 'bad3', $good, [ 'audit_pub', 'no_such_pub' ], undef, 1, '{}',
	qr/ERROR:  \w{5}: .*no_such_pub/);
create_fails('missing slot', 'bad4', $good, ['audit_pub'], 'no_such_slot', 0, '{}', qr/ERROR:  \w{5}: .*no_such_slot/);
create_fails('unknown option', 'bad5', $good, ['audit_pub'], undef, 1, '{"no_such_option": true}',
	qr/ERROR:  \w{5}: .*no_such_option/);
create_fails('empty publication list', 'bad6', $good, [], undef, 1, '{}', qr/ERROR:  \w{5}: /);
is($up->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '0',
	'no slot was left behind upstream by the failed attempts');

create_subscription($down, 'sub', $up);
like( psql_error($down, "SELECT logical_audit.create_subscription(name => 'sub', conninfo => " . sql_literal($good)
		  . ", publications => ARRAY['audit_pub'], slot_name => 'another_slot', create_slot => true, enabled => true, "
		  . "options => '{}'::jsonb)"),
	qr/ERROR:  \w{5}: .*sub/, 'duplicate name: clear error');
is($down->safe_psql('postgres', "SELECT state FROM logical_audit.status WHERE name = 'sub'"), 'streaming',
	'duplicate name: the first subscription is untouched');

for my $call ("start('nope')", "stop('nope')", "drop_subscription('nope', drop_slot => false)")
{
	like(psql_error($down, "SELECT logical_audit.$call"), qr/ERROR:  42704: .*nope/, "$call: undefined_object");
}

# A slot dropped upstream while the subscription is enabled.
$up->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
wait_for_audit_catchup($up, $down, 'sub');
$down->safe_psql('postgres', "SELECT logical_audit.stop('sub')");
$up->safe_psql('postgres', "SELECT pg_drop_replication_slot('logical_audit_sub')");
my $before_insert = $up->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$up->safe_psql('postgres', 'INSERT INTO t VALUES (2)');
my $error_time = status_field($down, 'sub', 'last_error_time');
$down->safe_psql('postgres', "SELECT logical_audit.start('sub')");
$error_time = wait_for_new_error($down, 'sub', $error_time);
like(status_field($down, 'sub', 'last_error'), qr/logical_audit_sub/, 'last_error names the missing slot');
# A second failed attempt: the worker retries, and stays where it was.
wait_for_new_error($down, 'sub', $error_time);
wait_for_state($down, 'sub', 'waiting_retry');
is( $down->safe_psql('postgres',
		"SELECT coalesce(flushed_lsn <= '$before_insert'::pg_lsn, true) FROM logical_audit.status WHERE name = 'sub'"),
	't', 'the position does not move past what was audited while the slot is missing');
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.change'), '1', 'nothing more is audited');

$down->safe_psql('postgres', "SELECT logical_audit.drop_subscription('sub', drop_slot => false)");
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.status'), '0', 'drop_subscription removes it');
is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.subscription'), '0', '... from the catalog too');

done_testing();
