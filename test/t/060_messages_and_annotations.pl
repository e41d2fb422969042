# Logical messages of the upstream (pg_logical_emit_message) are recorded in
# logical_audit.message with their transaction's commit_lsn; the JSON ones with prefix 'audit' are
# merged into transaction.annotations (who acted and why). Non-transactional messages are
# recorded without a commit_lsn; messages of rolled-back transactions are not recorded.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table();

# Runs an upstream transaction and returns its xid (the last line of its output).
sub upstream_txn
{
	my ($body) = @_;
	my @lines = split /\n/, $up->safe_psql('postgres', "BEGIN;\n$body\nSELECT pg_current_xact_id();\nCOMMIT;");
	return $lines[-1];
}

my $xid_annotated = upstream_txn(q{
	SELECT pg_logical_emit_message(true, 'audit', '{"user": "carol"}');
	INSERT INTO t VALUES (1);
	SELECT pg_logical_emit_message(true, 'audit', '{"reason": "refund", "ticket": 42}');
	SELECT pg_logical_emit_message(true, 'app', 'hello');
});
my $xid_message_only = upstream_txn(q{SELECT pg_logical_emit_message(true, 'audit', '{"user": "dave"}');});
my $xid_not_json = upstream_txn(q{
	SELECT pg_logical_emit_message(true, 'audit', 'not json');
	INSERT INTO t VALUES (2);
});
my $xid_binary = upstream_txn(q{
	INSERT INTO t VALUES (3);
	SELECT pg_logical_emit_message(true, 'bin', '\x00ff0a'::bytea);
});
$up->safe_psql('postgres', q{
	BEGIN;
	SELECT pg_logical_emit_message(true, 'audit', '{"user": "mallory"}');
	INSERT INTO t VALUES (4);
	ROLLBACK;
	SELECT pg_logical_emit_message(false, 'ping', 'outside any transaction');
});
wait_for_audit_catchup($up, $down, 'sub');

# Messages of the transaction with the given xid: "prefix:content" per line, in LSN order.
sub messages_of
{
	my ($xid) = @_;
	return $down->safe_psql('postgres', qq{
		SELECT m.prefix || ':' || convert_from(m.content, 'UTF8')
		FROM logical_audit.message m JOIN logical_audit.transaction t USING (subscription, commit_lsn)
		WHERE t.xid = '$xid'::xid8 AND m.transactional ORDER BY m.lsn});
}

sub annotations_sql
{
	my ($xid) = @_;
	return "SELECT annotations FROM logical_audit.transaction WHERE xid = '$xid'::xid8";
}

is(messages_of($xid_annotated), join("\n", 'audit:{"user": "carol"}', 'audit:{"reason": "refund", "ticket": 42}', 'app:hello'),
	'transactional messages recorded in order, tied to their transaction by commit_lsn');
jsonb_is($down, annotations_sql($xid_annotated), '{"user": "carol", "reason": "refund", "ticket": 42}',
	"the transaction's 'audit' JSON messages are merged into annotations");
is( $down->safe_psql('postgres', qq{
		SELECT count(*) FROM logical_audit.message m JOIN logical_audit.transaction t USING (subscription, commit_lsn)
		WHERE t.xid = '$xid_annotated'::xid8 AND m.lsn > t.commit_lsn}),
	'0', 'message LSNs lie before their commit');

is(messages_of($xid_message_only), 'audit:{"user": "dave"}', 'a transaction with only a message is recorded');
is( $down->safe_psql('postgres', "SELECT change_count FROM logical_audit.transaction WHERE xid = '$xid_message_only'::xid8"),
	'0', '... with change_count 0');
jsonb_is($down, annotations_sql($xid_message_only), '{"user": "dave"}', '... and its annotations');

is(messages_of($xid_not_json), 'audit:not json', "an 'audit' message that is not JSON is still recorded");
jsonb_is($down, "SELECT coalesce(annotations, '{}') FROM logical_audit.transaction WHERE xid = '$xid_not_json'::xid8",
	'{}', '... and adds no annotation');
jsonb_is($down, annotations_sql($xid_binary), undef, 'a transaction without audit messages has no annotations');

is( $down->safe_psql('postgres', qq{
		SELECT encode(m.content, 'hex') FROM logical_audit.message m
		JOIN logical_audit.transaction t USING (subscription, commit_lsn)
		WHERE t.xid = '$xid_binary'::xid8 AND m.prefix = 'bin'}),
	'00ff0a', 'binary content is kept byte for byte');

is( $down->safe_psql('postgres', q{
		SELECT transactional || ' ' || (commit_lsn IS NULL) || ' ' || convert_from(content, 'UTF8')
		FROM logical_audit.message WHERE prefix = 'ping'}),
	'false true outside any transaction', 'a non-transactional message is recorded without commit_lsn');

is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.message WHERE position('mallory'::bytea IN content) > 0}),
	'0', 'messages of a rolled-back transaction are not recorded');
is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.transaction WHERE annotations @> '{"user": "mallory"}'}),
	'0', '... nor annotated');
is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.message}), '7', 'seven messages in all');

done_testing();
