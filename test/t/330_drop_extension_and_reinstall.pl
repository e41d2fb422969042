# DROP EXTENSION logical_audit CASCADE stops the workers, drops their replication origins and
# spool files (a prepared transaction's included), and warns which upstream slots remain and how
# to drop them; CREATE EXTENSION again then works, and a new subscription never takes the id of a
# leftover origin.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream', conf => ['max_prepared_transactions = 10']);
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
create_subscription($down, 'plain', $up);
create_subscription($down, 'two_phase', $up, options => '{"two_phase": true}');
$up->safe_psql('postgres', q{INSERT INTO t VALUES (1); BEGIN; INSERT INTO t VALUES (2); PREPARE TRANSACTION 'g'});
wait_for_audit_catchup($up, $down, $_) for qw(plain two_phase);
my $spool_dir = $down->data_dir . '/pg_logical_audit';
is(scalar(() = glob("$spool_dir/*.prepared")), 1, 'a prepared transaction is spooled');

my $log_offset = -s $down->logfile;
my ($ret, $stdout, $stderr) = $down->psql('postgres', 'DROP EXTENSION logical_audit CASCADE',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
is($ret, 0, 'DROP EXTENSION CASCADE succeeds');
like($stderr, qr/WARNING:  01000: 2 replication slots of the dropped subscriptions remain upstream/,
	'it warns that the upstream slots remain');
like($stderr, qr/Slot "logical_audit_plain" of subscription "plain" on the upstream at .*port=\d+/,
	'naming each slot, its subscription and upstream');
like($stderr, qr/pg_drop_replication_slot/, 'and saying how to drop them');
poll_until($down, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical_audit worker'}, '0',
	'the workers gone', $down);
is($down->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_origin'), '0', 'the replication origins are dropped');
unlike(slurp_file($down->logfile, $log_offset), qr/launcher" \(PID \d+\) exited with exit code 1/,
	'the launcher, reading subscriptions meanwhile, does not fail');
is(scalar(() = glob("$spool_dir/*")), 0, 'the spool files are removed');
is($up->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE NOT active}), '2',
	'the upstream slots stay, inactive');

# Reinstall; an origin left by something else takes id 1: the new subscription gets another id.
$down->safe_psql('postgres', q{CREATE EXTENSION logical_audit; SELECT pg_replication_origin_create('logical_audit_1')});
# (A new slot waits for the prepared transaction to end.)
$up->safe_psql('postgres', q{COMMIT PREPARED 'g'; SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots});
create_subscription($down, 'plain', $up);
is($down->safe_psql('postgres', q{SELECT id > 1 FROM logical_audit.subscription WHERE name = 'plain'}), 't',
	'the new subscription does not take the id of the leftover origin');
$up->safe_psql('postgres', q{INSERT INTO t VALUES (3)});
wait_for_audit_catchup($up, $down, 'plain');
is($down->safe_psql('postgres', q{SELECT string_agg(new_row->>'id', ',') FROM logical_audit.change}), '3',
	'after the reinstall the subscription audits');

# Inside a transaction block DROP EXTENSION is refused: dropping an origin cannot be rolled back.
like(psql_error($down, 'BEGIN; DROP EXTENSION logical_audit CASCADE; COMMIT', extra_params => [ '-v', 'VERBOSITY=verbose' ]),
	qr/ERROR:  25001: DROP EXTENSION logical_audit cannot run inside a transaction block/,
	'DROP EXTENSION inside a transaction block is refused');
like(psql_error($down, q{BEGIN; SELECT logical_audit.drop_subscription('plain'); COMMIT},
		extra_params => [ '-v', 'VERBOSITY=verbose' ]),
	qr/ERROR:  25001: logical_audit.drop_subscription\(\) cannot run inside a transaction block/,
	'so is drop_subscription()');
$up->safe_psql('postgres', q{INSERT INTO t VALUES (4)});
wait_for_audit_catchup($up, $down, 'plain');
is($down->safe_psql('postgres', q{SELECT string_agg(new_row->>'id', ',' ORDER BY commit_lsn) FROM logical_audit.change}),
	'3,4', 'and the audit goes on, exactly once');

done_testing();
