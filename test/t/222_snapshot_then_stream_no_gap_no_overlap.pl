# The baseline snapshot and the stream that follows it meet exactly: while a writer keeps inserting
# and updating rows upstream before, during and after the snapshot, every upstream row is recorded
# exactly once as SNAPSHOT or INSERT (none missing, none in both, none twice), and the latest audited
# image of every row equals the upstream row.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $preloaded = 20000;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream');

$up->safe_psql('postgres', qq{
	CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL, touched int);
	INSERT INTO acct SELECT g, 0, NULL FROM generate_series(1, $preloaded) g;
	CREATE TABLE writer_control (stop boolean NOT NULL);
	INSERT INTO writer_control VALUES (false);
	CREATE PUBLICATION audit_pub FOR TABLE acct;
	-- One transaction per step: a new row and an update of an existing one, until told to stop.
	CREATE PROCEDURE write_until_stopped() LANGUAGE plpgsql AS \$\$
	DECLARE
		i int := 0;
	BEGIN
		WHILE NOT (SELECT stop FROM writer_control) LOOP
			i := i + 1;
			INSERT INTO acct VALUES ($preloaded + i, i, i);
			UPDATE acct SET balance = balance + 1, touched = i WHERE id = 1 + (i * 7919) % ($preloaded + i);
			COMMIT;
			PERFORM pg_sleep(0.001);
		END LOOP;
	END \$\$;
});

my ($writer, $err) = start_upstream_sql($up, 'CALL write_until_stopped()');

# Rows written before the slot exists must come from the snapshot, those after it from the stream.
poll_until($up, "SELECT count(*) >= $preloaded + 200 FROM acct", 't', 'the writer has started');
create_subscription($down, 'sub', $up, options => '{"snapshot": true}');
poll_until($down, q{SELECT count(*) >= 200 FROM logical_audit.change WHERE op = 'INSERT'}, 't',
	'the writer goes on, streamed', $down);
$up->safe_psql('postgres', 'UPDATE writer_control SET stop = true');
$writer->finish;
is($?, 0, 'the upstream writer completed') or diag($$err);

wait_for_audit_catchup($up, $down, 'sub');

my $ids = $up->safe_psql('postgres', 'SELECT string_agg(id::text, \',\') FROM acct');
my ($missing, $unexpected, $both, $twice) = split /\|/, $down->safe_psql('postgres', qq{
	CREATE TEMP TABLE upstream_id AS SELECT unnest('{$ids}'::int[]) AS id;
	CREATE TEMP TABLE recorded AS
		SELECT op, (new_row->>'id')::int AS id FROM logical_audit.change WHERE op IN ('SNAPSHOT', 'INSERT');
	SELECT (SELECT count(*) FROM (SELECT id FROM upstream_id EXCEPT SELECT id FROM recorded) m) || '|'
	    || (SELECT count(*) FROM (SELECT id FROM recorded EXCEPT SELECT id FROM upstream_id) u) || '|'
	    || (SELECT count(*) FROM (SELECT id FROM recorded WHERE op = 'SNAPSHOT'
	                              INTERSECT SELECT id FROM recorded WHERE op = 'INSERT') b) || '|'
	    || (SELECT count(*) - count(DISTINCT id) FROM recorded);
});
is($missing, '0', 'every upstream row is recorded as SNAPSHOT or INSERT');
is($unexpected, '0', 'no row is recorded that the upstream does not have');
is($both, '0', 'no row is recorded both by the snapshot and by the stream');
is($twice, '0', 'no row is recorded twice');

my ($snapshot_rows, $written_in_snapshot, $streamed_updates) = split /\|/, $down->safe_psql('postgres', qq{
	SELECT count(*) FILTER (WHERE op = 'SNAPSHOT') || '|'
	    || count(*) FILTER (WHERE op = 'SNAPSHOT' AND (new_row->>'id')::int > $preloaded) || '|'
	    || count(*) FILTER (WHERE op = 'UPDATE')
	FROM logical_audit.change});
cmp_ok($written_in_snapshot, '>', 0, "the snapshot ($snapshot_rows rows) holds rows the writer inserted");
cmp_ok($streamed_updates, '>', 0, 'updates of the writer were streamed');

# The latest audited image of each row (the snapshot sorts first: commit_lsn 0/0) against upstream.
my $upstream_digest = $up->safe_psql('postgres',
	q{SELECT count(*) || ' ' || md5(string_agg(to_jsonb(a)::text, E'\n' ORDER BY id)) FROM acct a});
is( $down->safe_psql('postgres', q{
		SELECT count(*) || ' ' || md5(string_agg(new_row::text, E'\n' ORDER BY id)) FROM (
			SELECT DISTINCT ON ((new_row->>'id')::int) (new_row->>'id')::int AS id, new_row
			FROM logical_audit.change WHERE op IN ('SNAPSHOT', 'INSERT', 'UPDATE')
			ORDER BY (new_row->>'id')::int, commit_lsn DESC, ordinal DESC) latest}),
	$upstream_digest, 'the latest audited image of every row equals the upstream row');

done_testing();
