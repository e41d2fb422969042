# Shared steps of the fault-matrix TAP suites (400-455): the proof that every upstream row is
# audited exactly once, in the transaction that wrote it; spool files; bounded waits on conditions
# only Perl can see; freezing processes with SIGSTOP (thawed however the test ends).
package FaultTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use AuditTest;

our @EXPORT = qw(
  new_streaming_pair
  upstream_rows
  audit_is_exactly_once
  audited_count
  change_bytes
  spool_files
  wait_until
  postmaster_pid
  freeze_processes
  thaw_processes
);

# An upstream that streams large transactions while they run (the smallest decoding memory) with
# table t (id int PRIMARY KEY, pad text) published, and a downstream auditing it as 'sub', which
# has audited 10 rows of t with ids from $first_id on. Returns ($up, $down).
sub new_streaming_pair
{
	my ($first_id) = @_;
	my $up = new_upstream('upstream', conf => ['logical_decoding_work_mem = 64kB']);
	my $down = new_downstream('downstream');
	$up->safe_psql('postgres', q{
		CREATE TABLE t (id int PRIMARY KEY, pad text);
		CREATE PUBLICATION audit_pub FOR TABLE t;
	});
	create_subscription($down, 'sub', $up);
	$up->safe_psql('postgres',
		"INSERT INTO t SELECT g, 'before' FROM generate_series($first_id, $first_id + 9) g");
	wait_for_audit_catchup($up, $down, 'sub');
	return ($up, $down);
}

# What an upstream table holds now, as audit_is_exactly_once compares it: the id and the inserting
# transaction (xmin) of each row where $where holds. Taken before a table is dropped, it stays valid.
sub upstream_rows
{
	my ($up, $table, $where) = @_;
	$where //= 'true';
	my ($ids, $xids) = split /\|/, $up->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') || '|'
		       || coalesce(string_agg(xmin::text, ',' ORDER BY id), '')
		FROM $table WHERE $where}), -1;
	return { table => $table, ids => $ids // '', xids => $xids // '' };
}

# Proves that subscription $name audited exactly the given upstream rows (from upstream_rows) of
# those tables, no more, no fewer, none twice, each as an INSERT in the transaction row of the
# upstream transaction that wrote it; that each upstream transaction has one transaction row; and
# that every transaction row of the subscription holds all its change rows.
sub audit_is_exactly_once
{
	my ($down, $name, @expected) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $sub = sql_literal($name);
	my $tables = join(', ', map { sql_literal($_->{table}) } @expected);
	my $upstream = join("\n\t\tUNION ALL ", map {
		sprintf("SELECT %s::text, u.id, u.xid FROM unnest('{%s}'::bigint[], '{%s}'::bigint[]) u(id, xid)",
			sql_literal($_->{table}), $_->{ids}, $_->{xids})
	} @expected);
	my $upstream_count = 0;
	$upstream_count += scalar(grep { $_ ne '' } split /,/, $_->{ids}) for @expected;

	my ($audited, $distinct, $missing, $unexpected, $misplaced, $txns, $up_txns) =
	  split /\|/, $down->safe_psql('postgres', qq{
		CREATE TEMP TABLE expected_row (table_name text, id bigint, xid bigint);
		INSERT INTO expected_row $upstream;
		CREATE TEMP TABLE audited_row AS
			SELECT c.table_name, (c.new_row->>'id')::bigint AS id, t.xid::text::bigint AS xid, c.commit_lsn
			FROM logical_audit.change c JOIN logical_audit.transaction t USING (subscription, commit_lsn)
			WHERE c.subscription = $sub AND c.op = 'INSERT' AND c.table_name IN ($tables);
		SELECT (SELECT count(*) FROM audited_row) || '|'
		    || (SELECT count(DISTINCT (table_name, id)) FROM audited_row) || '|'
		    || (SELECT count(*) FROM (SELECT table_name, id FROM expected_row
		                              EXCEPT SELECT table_name, id FROM audited_row) m) || '|'
		    || (SELECT count(*) FROM (SELECT table_name, id FROM audited_row
		                              EXCEPT SELECT table_name, id FROM expected_row) u) || '|'
		    || (SELECT count(*) FROM (SELECT table_name, id, xid FROM audited_row
		                              EXCEPT SELECT table_name, id, xid FROM expected_row) x) || '|'
		    || (SELECT count(DISTINCT commit_lsn) FROM audited_row) || '|'
		    || (SELECT count(DISTINCT xid) FROM expected_row);
	});
	is("$audited $distinct", "$upstream_count $upstream_count",
		"$upstream_count audited inserts for the $upstream_count upstream rows, none doubled");
	is($missing, '0', 'no upstream row is missing from the audit');
	is($unexpected, '0', 'the audit holds no row the upstream does not have');
	is($misplaced, '0', 'each row is audited in the transaction of the upstream xid that wrote it');
	is($txns, $up_txns, "one transaction row for each of the $up_txns upstream transactions");
	is( $down->safe_psql('postgres', qq{
			SELECT (SELECT count(*) - count(DISTINCT xid) FROM logical_audit.transaction WHERE subscription = $sub)
			    || ' ' || (SELECT count(*) FROM logical_audit.transaction t
			               LEFT JOIN (SELECT subscription, commit_lsn, count(*) AS n, max(ordinal) AS last
			                          FROM logical_audit.change GROUP BY 1, 2) c USING (subscription, commit_lsn)
			               WHERE t.subscription = $sub
			                 AND (coalesce(c.n, 0) <> t.change_count OR coalesce(c.last, 0) <> t.change_count))}),
		'0 0', 'no upstream transaction recorded twice; each transaction row has its change rows 1..change_count');
	return;
}

# The number of change rows subscription $name holds ($where narrows them).
sub audited_count
{
	my ($down, $name, $where) = @_;
	$where //= 'true';
	return $down->safe_psql('postgres',
		'SELECT count(*) FROM logical_audit.change WHERE subscription = ' . sql_literal($name) . " AND ($where)");
}

# The SQL that gives the bytes the change table's partitions take.
sub change_bytes
{
	return q{(SELECT coalesce(sum(bytes), 0) FROM logical_audit.partitions WHERE audit_table = 'change')};
}

# The spool files of the given kind (stream or prepared) in the downstream's data directory.
sub spool_files
{
	my ($down, $kind) = @_;
	$kind //= 'stream';
	return scalar(() = glob($down->data_dir . "/pg_logical_audit/*.$kind"));
}

# Waits until $condition (a Perl sub) returns true, at most timeout_default seconds. On timeout
# the test fails with $what, a report of $report_node (if given), and stops.
sub wait_until
{
	my ($condition, $what, $report_node) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		return 1 if $condition->();
		usleep(100_000);
	}
	return 1 if $condition->();
	fail("timed out waiting: $what");
	diag(status_report($report_node)) if $report_node;
	die "timed out waiting: $what\n";
}

# The pid of a running node's postmaster, from its postmaster.pid.
sub postmaster_pid
{
	my ($node) = @_;
	my ($pid) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
	return $pid;
}

# Processes stopped with SIGSTOP and not yet continued: the END block continues them, so that a
# failing test still lets the clusters shut down.
my @frozen;

sub freeze_processes
{
	my (@pids) = @_;
	for my $pid (@pids)
	{
		push @frozen, $pid if kill 'STOP', $pid;
	}
	return scalar(@frozen);
}

sub thaw_processes
{
	kill 'CONT', @frozen if @frozen;
	@frozen = ();
	return;
}

END { thaw_processes(); }

1;
