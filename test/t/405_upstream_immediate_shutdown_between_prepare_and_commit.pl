# Fault matrix: with two_phase, the upstream crashes (immediate shutdown) after a PREPARE
# TRANSACTION that the worker has already received and spooled durably. The prepared transaction
# survives the upstream's recovery; after the reconnect the upstream sends only its COMMIT
# PREPARED, and the worker audits it exactly once from its spool file, with its gid, and removes
# the file. Transactions before and after the crash are audited exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my $up = new_upstream('upstream', conf => ['max_prepared_transactions = 10']);
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
create_subscription($down, 'sub', $up, options => '{"two_phase": true}');

$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 1 .. 10));
$up->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO t SELECT generate_series(1001, 1100);
	PREPARE TRANSACTION 'crash_gid';
});
# The audited position passes the PREPARE: the worker holds the transaction in its spool file.
wait_for_audit_catchup($up, $down, 'sub');
is(spool_files($down, 'prepared'), 1, 'the prepared transaction is spooled');
is(audited_count($down, 'sub', q{(new_row->>'id')::int > 1000}), '0', 'nothing of it is audited at PREPARE');

my $error_before = status_field($down, 'sub', 'last_error_time');
$up->stop('immediate');
wait_for_new_error($down, 'sub', $error_before);
pass('the worker recorded the loss of the upstream');
$up->start;
is($up->safe_psql('postgres', q{SELECT gid FROM pg_prepared_xacts}), 'crash_gid',
	'the transaction is still prepared after the upstream\'s recovery');

$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 11 .. 20));
wait_for_state($down, 'sub', 'streaming');
is(spool_files($down, 'prepared'), 1, 'the spool file of the prepared transaction survives the reconnect');
$up->safe_psql('postgres', q{COMMIT PREPARED 'crash_gid'});
$up->safe_psql('postgres', join("\n", map { "INSERT INTO t VALUES ($_);" } 21 .. 30));
wait_for_audit_catchup($up, $down, 'sub');

audit_is_exactly_once($down, 'sub', upstream_rows($up, 't'));
is( $down->safe_psql('postgres', q{
		SELECT count(*) || ' ' || min(t.gid) || ' ' || min(t.change_count) || ' ' || bool_and(NOT t.rolled_back)
		FROM logical_audit.transaction t
		WHERE t.commit_lsn IN (SELECT commit_lsn FROM logical_audit.change WHERE (new_row->>'id')::int > 1000)}),
	'1 crash_gid 100 true', 'the prepared transaction has one transaction row, with its gid and its 100 changes');
is( $down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.transaction WHERE gid IS NOT NULL}),
	'1', 'no other transaction row carries a gid');
is(spool_files($down, 'prepared'), 0, 'the spool file goes after COMMIT PREPARED');
is(spool_files($down, 'stream'), 0, 'no other spool file is left');
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
