# Every kind of upstream change (INSERT, UPDATE with and without a key change, DELETE, TRUNCATE)
# becomes audit rows: one transaction row per upstream transaction with its xid, LSNs and commit
# time, one change row per changed row in upstream order. Rolled-back work is not audited.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream', conf => ['track_commit_timestamp = on']);
my $down = new_downstream('downstream');

$up->safe_psql('postgres', q{
	CREATE TABLE item (id int PRIMARY KEY, name text, qty int);
	CREATE TABLE unpublished (id int PRIMARY KEY);
	CREATE PUBLICATION audit_pub FOR TABLE item;
});
create_subscription($down, 'sub', $up);

is(status_field($down, 'sub', 'slot_name'), 'logical_audit_sub', 'default slot name');
is( $up->safe_psql('postgres',
		"SELECT plugin || ' ' || slot_type FROM pg_replication_slots WHERE slot_name = 'logical_audit_sub'"),
	'pgoutput logical',
	'the subscription created a pgoutput slot upstream');

# Runs one upstream transaction and returns its xid.
sub upstream_txn
{
	my ($body) = @_;
	return $up->safe_psql('postgres', "BEGIN;\n$body\nSELECT pg_current_xact_id();\nCOMMIT;");
}

my %xid;
$xid{insert} = upstream_txn(q{INSERT INTO item VALUES (1, 'apple', 3), (2, 'pear', 5);});
$xid{update} = upstream_txn(q{UPDATE item SET qty = 4 WHERE id = 1;});
$xid{update_key} = upstream_txn(q{UPDATE item SET id = 10 WHERE id = 2;});
$xid{delete} = upstream_txn(q{DELETE FROM item WHERE id = 1;});
$up->safe_psql('postgres', q{BEGIN; INSERT INTO item VALUES (99, 'rolled back', 0); ROLLBACK;});
$up->safe_psql('postgres', q{INSERT INTO unpublished VALUES (1);});
$xid{truncate} = upstream_txn(q{TRUNCATE item;});
$xid{mixed} = upstream_txn(q{
	INSERT INTO item VALUES (3, 'fig', 1);
	UPDATE item SET name = 'ripe fig' WHERE id = 3;
	DELETE FROM item WHERE id = 3;
	INSERT INTO item VALUES (4, NULL, NULL);
});
$xid{savepoint} = upstream_txn(q{
	INSERT INTO item VALUES (5, 'kept', 1);
	SAVEPOINT s;
	INSERT INTO item VALUES (6, 'rolled back to savepoint', 1);
	ROLLBACK TO SAVEPOINT s;
	INSERT INTO item VALUES (7, 'kept too', 1);
});

my $end = wait_for_audit_catchup($up, $down, 'sub');

is($down->safe_psql('postgres', 'SELECT count(*) FROM logical_audit.transaction'),
	scalar(keys %xid), 'one transaction row per committed upstream transaction that changed a published table');

my %expected_count = (insert => 2, update => 1, update_key => 1, delete => 1, truncate => 1, mixed => 4,
	savepoint => 2);
for my $txn (sort keys %xid)
{
	my $x = $xid{$txn};
	is( $down->safe_psql('postgres',
			"SELECT change_count || ' ' || (commit_lsn < end_lsn) || ' ' || (end_lsn <= '$end') || ' ' "
			  . "|| (origin IS NULL) || ' ' || (audited_at IS NOT NULL) "
			  . "FROM logical_audit.transaction WHERE subscription = 'sub' AND xid = '$x'::xid8"),
		"$expected_count{$txn} true true true true",
		"$txn: transaction row with xid $x, change_count, LSNs and no origin");
	is( $down->safe_psql('postgres',
			"SELECT string_agg(ordinal::text, ',' ORDER BY ordinal) FROM logical_audit.change c "
			  . "JOIN logical_audit.transaction t USING (subscription, commit_lsn) WHERE t.xid = '$x'::xid8"),
		join(',', 1 .. $expected_count{$txn}),
		"$txn: change ordinals 1..n");
	my $upstream_time = upstream_value($up, "SELECT pg_xact_commit_timestamp('$x'::xid)");
	is( $down->safe_psql('postgres',
			"SET TimeZone = 'UTC'; SELECT commit_time FROM logical_audit.transaction WHERE xid = '$x'::xid8"),
		$upstream_time,
		"$txn: commit_time is the upstream commit timestamp");
}

# One change row of the transaction with xid $xid{$txn}, as "op schema.table".
sub change_sql
{
	my ($txn, $ordinal, $column) = @_;
	return "SELECT c.$column FROM logical_audit.change c JOIN logical_audit.transaction t "
	  . "USING (subscription, commit_lsn) WHERE t.xid = '$xid{$txn}'::xid8 AND c.ordinal = $ordinal";
}

sub change_is
{
	my ($txn, $ordinal, $op, $old, $new, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	is($down->safe_psql('postgres', change_sql($txn, $ordinal, "op || ' ' || schema_name || '.' || table_name")),
		"$op public.item", "$what: op and table");
	jsonb_is($down, change_sql($txn, $ordinal, 'old_row'), $old, "$what: old_row");
	jsonb_is($down, change_sql($txn, $ordinal, 'new_row'), $new, "$what: new_row");
}

change_is('insert', 1, 'INSERT', undef, '{"id": 1, "name": "apple", "qty": 3}', 'first inserted row');
change_is('insert', 2, 'INSERT', undef, '{"id": 2, "name": "pear", "qty": 5}', 'second inserted row');
change_is('update', 1, 'UPDATE', undef, '{"id": 1, "name": "apple", "qty": 4}',
	'update keeping the key (no old row sent)');
change_is('update_key', 1, 'UPDATE', '{"id": 2}', '{"id": 10, "name": "pear", "qty": 5}',
	'update of the key (old key sent)');
change_is('delete', 1, 'DELETE', '{"id": 1}', undef, 'delete (old key)');
change_is('truncate', 1, 'TRUNCATE', undef, undef, 'truncate');
change_is('mixed', 1, 'INSERT', undef, '{"id": 3, "name": "fig", "qty": 1}', 'mixed 1');
change_is('mixed', 2, 'UPDATE', undef, '{"id": 3, "name": "ripe fig", "qty": 1}', 'mixed 2');
change_is('mixed', 3, 'DELETE', '{"id": 3}', undef, 'mixed 3');
change_is('mixed', 4, 'INSERT', undef, '{"id": 4, "name": null, "qty": null}', 'mixed 4: NULLs as JSON null');
change_is('savepoint', 1, 'INSERT', undef, '{"id": 5, "name": "kept", "qty": 1}', 'savepoint 1');
change_is('savepoint', 2, 'INSERT', undef, '{"id": 7, "name": "kept too", "qty": 1}',
	'savepoint 2: the rolled-back subtransaction is left out');

is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.change WHERE new_row->>'id' IN ('6', '99')}),
	'0', 'rolled-back rows are not audited');

# Status reflects the audited work.
my $n_changes = 0;
$n_changes += $_ for values %expected_count;
is( $down->safe_psql('postgres',
		"SELECT enabled || ' ' || state || ' ' || transactions || ' ' || changes FROM logical_audit.status WHERE name = 'sub'"),
	'true streaming ' . scalar(keys %xid) . " $n_changes",
	'status counts the audited transactions and changes');
is( $down->safe_psql('postgres',
		"SELECT received_lsn >= flushed_lsn AND upstream_lsn >= flushed_lsn AND lag_bytes >= 0 "
		  . "AND last_msg_send_time IS NOT NULL AND last_msg_receipt_time IS NOT NULL "
		  . "AND last_commit_time IS NOT NULL AND last_error IS NULL FROM logical_audit.status WHERE name = 'sub'"),
	't', 'status positions and times are filled');

done_testing();
