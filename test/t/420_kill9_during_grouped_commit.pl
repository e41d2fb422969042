# Fault matrix: while the upstream commits many one-row transactions, which the worker puts by the
# hundred into one local commit (grouped commit, synchronous_commit off), the downstream is killed
# with SIGKILL (postmaster and worker) twice and restarted. Whatever group was being written or
# not yet flushed when it died, every upstream transaction is audited exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my $rows = 15_000;
my $up = new_upstream('upstream');
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, payload text);
	CREATE PUBLICATION audit_pub FOR TABLE t;
	CREATE PROCEDURE workload(n int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN 1 .. n LOOP
			INSERT INTO t VALUES (i, md5(i::text));
			COMMIT;
			-- Paced, so that the workload still runs at both kills.
			IF i % 10 = 0 THEN
				PERFORM pg_sleep(0.005);
			END IF;
		END LOOP;
	END $$;
});
create_subscription($down, 'sub', $up);

my ($workload, $err) = start_upstream_sql($up, "CALL workload($rows)");

my $offset = -s $down->logfile;
kill_downstream_at_progress($down, 'sub', map { $_ * int($rows / 3) } 1 .. 2);

$workload->finish;
is($?, 0, 'the upstream workload completed') or diag($$err);
wait_for_audit_catchup($up, $down, 'sub');
is( $down->safe_psql('postgres', q{
		SELECT max(n) > 1 FROM (SELECT count(*) AS n FROM logical_audit.transaction_data
		                        GROUP BY xmin::text) g}),
	't', 'the worker grouped several upstream transactions into one local commit');
unlike(slurp_file($down->logfile, $offset), qr/terminated by signal/, 'no process crashed');
audit_is_exactly_once($down, 'sub', upstream_rows($up, 't'));
is($up->safe_psql('postgres', 'SELECT count(*) FROM t'), $rows, "$rows one-row transactions upstream");
is(status_field($down, 'sub', 'state'), 'streaming', 'the worker streams on');

done_testing();
