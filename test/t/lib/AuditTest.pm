# Shared steps of the logical_audit TAP suites: an upstream and a downstream cluster, subscriptions,
# waiting (always bounded by $PostgreSQL::Test::Utils::timeout_default) and comparing audit rows
# with what the upstream itself computes.
package AuditTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(
  $BUILTIN_TYPE_COLUMNS
  $BUILTIN_TYPE_VALUES
  new_upstream
  new_downstream
  update_extension
  new_audited_table
  create_subscription
  sql_literal
  sql_text_array
  poll_until
  wait_for_state
  wait_for_worker_pid
  wait_for_audit_catchup
  audited_step
  wait_for_new_error
  status_field
  status_report
  upstream_value
  jsonb_is
  psql_error
  start_after_kill9
  kill_downstream
  kill_downstream_at_progress
  start_upstream_sql
);

# The publication most tests audit, created by new_upstream when asked for tables.
our $PUBLICATION = 'audit_pub';

# Columns of every built-in type family (to follow an id column), for tests that compare audited
# rows with the upstream's own to_jsonb, and one row of values for them, in their order.
our $BUILTIN_TYPE_COLUMNS = q{
	c_bool boolean, c_int2 smallint, c_int4 integer, c_int8 bigint,
	c_numeric numeric, c_numeric_scaled numeric(12,4), c_float4 real, c_float8 double precision,
	c_money money,
	c_text text, c_varchar varchar(20), c_bpchar char(6), c_name name, c_char "char",
	c_bytea bytea,
	c_date date, c_time time, c_timetz timetz, c_timestamp timestamp, c_timestamptz timestamptz,
	c_interval interval,
	c_uuid uuid, c_inet inet, c_cidr cidr, c_macaddr macaddr, c_macaddr8 macaddr8,
	c_bit bit(4), c_varbit varbit,
	c_json json, c_jsonb jsonb, c_jsonpath jsonpath, c_xml xml,
	c_point point, c_line line, c_lseg lseg, c_box box, c_path path, c_polygon polygon, c_circle circle,
	c_tsvector tsvector, c_tsquery tsquery,
	c_int4range int4range, c_numrange numrange, c_tstzrange tstzrange, c_daterange daterange,
	c_int8multirange int8multirange,
	c_oid oid, c_regclass regclass, c_regtype regtype, c_pg_lsn pg_lsn,
	c_int_array int[], c_text_array text[], c_int_2d int[], c_tstz_array timestamptz[],
	c_jsonb_array jsonb[], c_numeric_array numeric[], c_float8_array float8[], c_bool_array boolean[]};

our $BUILTIN_TYPE_VALUES = q{
	true, 32767, -2147483648, 9223372036854775807,
	12345678901234567890.123456789, 3.14, 1.1, 0.1,
	'1234.56',
	'quotes " and \ backslash, ünïcödé, tab	and' || chr(10) || 'newline', 'varchar', 'ab', 'a_name', 'x',
	'\x00ff10',
	'2024-02-29', '23:59:59.999999', '12:00:00+05:30', '2024-01-01 10:00:00.5', '2024-06-30 22:15:00.123456+02',
	'1 year 2 mons 3 days 04:05:06.7',
	'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.1.5/24', '10.0.0.0/8', '08:00:2b:01:02:03',
	'08:00:2b:01:02:03:04:05',
	B'1010', B'10110',
	'{"b": [1, 2, {"c": null}], "a": "x", "n": 1.50}', '{"nested": {"k": [true, false, 1.50, "s"]}}',
	'$.a[*] ? (@ > 1)', '<a attr="1">x &amp; y</a>',
	'(1.5,2)', '{1,-1,0}', '[(0,0),(1,1)]', '((0,0),(1,1))', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(2,0))',
	'<(1,1),2>',
	'a fat cat sat on a mat', 'fat & (rat | cat)',
	'[1,10)', '(1.5,2.5]', '[2024-01-01 00:00+00,2024-01-02 00:00+05)', '[2024-01-01,2024-02-01)',
	'{[1,3), [5,8)}',
	4294967295, 'pg_class', 'integer', '16/B374D848',
	'{1,NULL,3}', '{"a b","c,d","e\"f",NULL,"NULL",""}', '{{1,2},{3,4}}',
	'{"2024-01-01 00:00:00+00","2024-07-01 12:00:00+03"}',
	ARRAY['{"a": 1}'::jsonb, '[]', 'null', '"s"'], '{1.5,NaN,Infinity,-Infinity}',
	'{1e308,-0,NaN,-Infinity,2.5e-310}', '{t,f,NULL}'};

# An SQL string literal for a Perl string (standard_conforming_strings is on).
sub sql_literal
{
	my ($value) = @_;
	return 'NULL' unless defined $value;
	$value =~ s/'/''/g;
	return "'$value'";
}

# An SQL text[] constructor for a list of Perl strings.
sub sql_text_array
{
	my @items = @_;
	return 'ARRAY[' . join(', ', map { sql_literal($_) } @items) . ']::text[]';
}

# Starts an upstream primary with wal_level = logical. conf => [lines] adds settings.
sub new_upstream
{
	my ($name, %params) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	# allows_streaming keeps max_connections at 10: leave room for test sessions and walsenders.
	$node->append_conf('postgresql.conf',
		join("\n", 'max_connections = 30', 'max_wal_senders = 10', @{ $params{conf} // [] }));
	$node->start;
	return $node;
}

# Starts a downstream with logical_audit preloaded (unless preload => 0) and the extension created
# in the postgres database (at version => V, default the current one). conf => [lines] adds settings.
sub new_downstream
{
	my ($name, %params) = @_;
	my $version = defined $params{version} ? " VERSION '$params{version}'" : '';
	my $preload = $params{preload} // 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my @conf = ('max_worker_processes = 16', 'wal_receiver_status_interval = 1s');
	push @conf, "shared_preload_libraries = 'logical_audit'" if $preload;
	$node->append_conf('postgresql.conf', join("\n", @conf, @{ $params{conf} // [] }));
	$node->start;
	$node->safe_psql('postgres', "CREATE EXTENSION logical_audit$version");
	return $node;
}

# Runs ALTER EXTENSION logical_audit UPDATE on $node and checks it reached the default version.
sub update_extension
{
	my ($node) = @_;
	$node->safe_psql('postgres', 'ALTER EXTENSION logical_audit UPDATE');
	is( $node->safe_psql('postgres', q{
			SELECT extversion = default_version FROM pg_extension JOIN pg_available_extensions ON name = extname
			WHERE extname = 'logical_audit'}),
		't', 'ALTER EXTENSION UPDATE reaches the default version');
}

# Starts an upstream with table t (id int PRIMARY KEY) published as audit_pub and a downstream
# auditing it through the given subscriptions (default 'sub'); upstream_conf and downstream_conf
# add settings. Returns ($up, $down).
sub new_audited_table
{
	my (%params) = @_;
	my $up = new_upstream('upstream', conf => $params{upstream_conf});
	my $down = new_downstream('downstream', conf => $params{downstream_conf});
	$up->safe_psql('postgres', qq{
		CREATE TABLE t (id int PRIMARY KEY);
		CREATE PUBLICATION $PUBLICATION FOR TABLE t;
	});
	create_subscription($down, $_, $up) for @{ $params{subscriptions} // ['sub'] };
	return ($up, $down);
}

# The SQL call that creates a subscription, every argument of the contract spelled out.
sub create_subscription_sql
{
	my ($name, $conninfo, %params) = @_;
	my @publications = @{ $params{publications} // [$PUBLICATION] };
	my $enabled = ($params{enabled} // 1) ? 'true' : 'false';
	my $create_slot = ($params{create_slot} // 1) ? 'true' : 'false';
	return sprintf(
		"SELECT logical_audit.create_subscription(name => %s, conninfo => %s, publications => %s, "
		  . "slot_name => %s, create_slot => %s, enabled => %s, options => %s::jsonb)",
		sql_literal($name), sql_literal($conninfo), sql_text_array(@publications),
		sql_literal($params{slot_name}), $create_slot, $enabled,
		sql_literal($params{options} // '{}'));
}

# Creates subscription $name on $down for the upstream $up (database dbname, default postgres);
# publications, slot_name, create_slot, enabled, options and conninfo override the defaults.
# Waits until its worker streams unless enabled => 0 or wait => 0.
sub create_subscription
{
	my ($down, $name, $up, %params) = @_;
	my $conninfo = $params{conninfo} // $up->connstr($params{dbname} // 'postgres');
	$down->safe_psql('postgres', create_subscription_sql($name, $conninfo, %params));
	wait_for_state($down, $name, 'streaming')
	  if ($params{enabled} // 1) && ($params{wait} // 1);
	return;
}

# Dumps what helps to understand a failure: status and the end of the downstream log.
sub status_report
{
	my ($down) = @_;
	my ($stdout, $stderr);
	$down->psql('postgres', 'SELECT * FROM logical_audit.status ORDER BY name',
		stdout => \$stdout, stderr => \$stderr, extra_params => ['-x']);
	my $log = eval { slurp_file($down->logfile) } // '';
	my @lines = split /\n/, $log;
	splice(@lines, 0, @lines - 40) if @lines > 40;
	return "logical_audit.status:\n" . ($stdout // '') . ($stderr // '')
	  . "\nlast lines of the downstream log:\n" . join("\n", @lines) . "\n";
}

# Polls $sql on $node until it returns $expected (one line, as psql -At prints it). On timeout
# the test fails with $what, a report of $report_node (if given), and stops.
sub poll_until
{
	my ($node, $sql, $expected, $what, $report_node) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return 1 if $node->poll_query_until('postgres', $sql, $expected);
	fail("timed out waiting: $what");
	diag(status_report($report_node)) if $report_node;
	die "timed out waiting: $what\n";
}

# One column of a subscription's status row, '' when NULL.
sub status_field
{
	my ($down, $name, $column) = @_;
	return $down->safe_psql('postgres',
		"SELECT $column FROM logical_audit.status WHERE name = " . sql_literal($name));
}

# Waits until the subscription's status shows $state.
sub wait_for_state
{
	my ($down, $name, $state) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	poll_until($down,
		"SELECT state FROM logical_audit.status WHERE name = " . sql_literal($name),
		$state, "subscription $name in state $state", $down);
	return;
}

# Waits until a worker process serves the subscription and returns its pid.
sub wait_for_worker_pid
{
	my ($down, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	poll_until($down,
		"SELECT pid IS NOT NULL FROM logical_audit.status WHERE name = " . sql_literal($name),
		't', "a worker for $name", $down);
	return status_field($down, $name, 'pid');
}

# Waits until the subscription has audited everything the upstream has written so far: its
# flushed_lsn reaches the upstream's current WAL position. Returns that position.
sub wait_for_audit_catchup
{
	my ($up, $down, $name, $dbname) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $target = $up->safe_psql($dbname // 'postgres', 'SELECT pg_current_wal_lsn()');
	poll_until($down,
		"SELECT flushed_lsn >= '$target'::pg_lsn FROM logical_audit.status WHERE name = "
		  . sql_literal($name),
		't', "$name audited up to upstream LSN $target", $down);
	return $target;
}

# Runs SQL on the upstream and waits until the subscription has audited everything up to there.
sub audited_step
{
	my ($up, $down, $name, $sql) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$up->safe_psql('postgres', $sql);
	return wait_for_audit_catchup($up, $down, $name);
}

# Waits until status shows a last_error_time later than $after (a timestamptz text, or undef for
# any error) and returns the new last_error_time.
sub wait_for_new_error
{
	my ($down, $name, $after) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $cond = defined $after && $after ne ''
	  ? "last_error_time > " . sql_literal($after) . "::timestamptz"
	  : "last_error_time IS NOT NULL";
	poll_until($down,
		"SELECT $cond AND last_error IS NOT NULL FROM logical_audit.status WHERE name = "
		  . sql_literal($name),
		't', "a new error recorded for $name", $down);
	return status_field($down, $name, 'last_error_time');
}

# A query's single value computed on the upstream with TimeZone UTC, as the worker renders
# timestamptz values.
sub upstream_value
{
	my ($up, $sql, $dbname) = @_;
	return $up->safe_psql($dbname // 'postgres', "SET TimeZone = 'UTC';\n$sql");
}

# Compares the jsonb a downstream query returns with the expected jsonb text, both in jsonb's
# canonical text form so that the failure message shows the difference.
sub jsonb_is
{
	my ($down, $actual_sql, $expected, $test_name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $actual = $down->safe_psql('postgres', "SELECT coalesce(($actual_sql)::text, 'NULL')");
	my $canonical = defined $expected
	  ? $down->safe_psql('postgres', 'SELECT ' . sql_literal($expected) . '::jsonb::text')
	  : 'NULL';
	is($actual, $canonical, $test_name);
	return;
}

# Runs SQL expected to fail; returns its stderr (with SQLSTATE, in verbose form), '' if it
# succeeded. connstr => ... connects otherwise than as the bootstrap superuser.
sub psql_error
{
	my ($node, $sql, %params) = @_;
	my ($stdout, $stderr);
	my $ret = $node->psql('postgres', $sql,
		stdout => \$stdout, stderr => \$stderr,
		extra_params => [ '-v', 'VERBOSITY=verbose' ],
		%params);
	return $ret == 0 ? '' : $stderr;
}

# Starts a node whose postmaster was killed: retries while orphaned children of the old one still
# hold its shared memory.
sub start_after_kill9
{
	my ($node) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		return 1 if $node->start(fail_ok => 1);
		# A failed start may have recorded the dead postmaster's pid: forget it before retrying.
		$node->stop('immediate', fail_ok => 1);
		usleep(200_000);
	}
	return $node->start;
}

# SIGKILLs the downstream: the postmaster and, at the same instant, the workers serving the given
# subscriptions (as a crash of the machine would stop them all), then starts it again.
sub kill_downstream
{
	my ($down, @names) = @_;
	my @pids;
	if (@names)
	{
		my $list = join(', ', map { sql_literal($_) } @names);
		@pids = grep { /^\d+$/ } split /\n/,
		  $down->safe_psql('postgres',
			"SELECT pid FROM logical_audit.status WHERE name IN ($list) AND pid IS NOT NULL");
	}
	$down->kill9;
	kill 'KILL', @pids if @pids;
	start_after_kill9($down);
	return;
}

# Runs SQL on the upstream in the background (a workload), bounded by three times the default
# timeout. Returns the IPC::Run harness, whose finish() waits for it (then $? is psql's status),
# and a reference to its stderr.
sub start_upstream_sql
{
	my ($up, $sql) = @_;
	my ($out, $err) = ('', '');
	my $harness = IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $up->connstr('postgres'), '-c', $sql ],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default));
	return ($harness, \$err);
}

# SIGKILLs the downstream (with the subscription's worker) each time the audit holds another of the
# given numbers of change rows, wherever the worker is then, and starts it again.
sub kill_downstream_at_progress
{
	my ($down, $name, @thresholds) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	for my $threshold (@thresholds)
	{
		poll_until($down, "SELECT count(*) >= $threshold FROM logical_audit.change", 't',
			"$threshold changes audited", $down);
		wait_for_worker_pid($down, $name);
		kill_downstream($down, $name);
		pass("downstream killed with SIGKILL after $threshold changes, and started again");
	}
	return;
}

1;
