# Right after a worker starts, the first messages the upstream sends may be older than the audited
# position: a transaction that began before it and commits after it is sent from its first change.
# status.upstream_lsn must never show less than what was received or flushed, and lag_bytes never
# a negative number, from the first status row of the new worker on.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table();

# A transaction that starts now and commits after the restart, with a lot of WAL in between.
my $early = $up->background_psql('postgres');
$early->query_safe('BEGIN; INSERT INTO t VALUES (0)');
$up->safe_psql('postgres', 'INSERT INTO t SELECT g FROM generate_series(1, 20000) g');
$up->safe_psql('postgres', "INSERT INTO t VALUES (20000 + $_)") for 1 .. 20;
wait_for_audit_catchup($up, $down, 'sub');
$down->safe_psql('postgres', q{SELECT logical_audit.stop('sub')});

# Samples the status every 5 ms for a few seconds: the smallest lag and margins seen.
my $sampler = $down->background_psql('postgres');
$sampler->query_until(qr/sampling/, q{
	\echo sampling
	CREATE TEMP TABLE sample AS SELECT 0 AS i, * FROM logical_audit.status WHERE false;
	DO $$ BEGIN
		FOR i IN 1 .. 800 LOOP
			INSERT INTO sample SELECT i, * FROM logical_audit.status WHERE pid IS NOT NULL;
			PERFORM pg_sleep(0.005);
		END LOOP;
	END $$;
});
$down->safe_psql('postgres', q{SELECT logical_audit.start('sub')});
wait_for_state($down, 'sub', 'streaming');
$early->query_safe('COMMIT');
$early->quit;
$sampler->query_safe('SELECT 1');
my $seen = $sampler->query_safe(q{
	SELECT count(*) FILTER (WHERE state = 'streaming'),
	       count(*) FILTER (WHERE lag_bytes < 0),
	       count(*) FILTER (WHERE upstream_lsn < flushed_lsn OR upstream_lsn < received_lsn)
	FROM sample});
$sampler->quit;
my ($streaming, $negative, $behind) = split /\|/, $seen;
cmp_ok($streaming, '>', 0, 'the new worker was sampled while streaming');
is($negative, 0, 'lag_bytes was never negative');
is($behind, 0, 'upstream_lsn was never older than received_lsn or flushed_lsn');

wait_for_audit_catchup($up, $down, 'sub');
is($down->safe_psql('postgres', 'SELECT count(*), count(DISTINCT new_row) FROM logical_audit.change'), '20021|20021',
	'every row audited once');

done_testing();
