# The downstream is killed with SIGKILL while the worker writes a large transaction of UPDATEs
# (20,000 rows with ~3 kB values). The aborted local transaction leaves dead heap and index entries;
# after the restart the worker looks up each row's latest image through them. It must audit the
# transaction exactly once, with every row's changed columns, and never crash.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;
use FaultTest;

my $rows = 20_000;
my $up = new_upstream('upstream');
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, v int, pad text);
	CREATE PUBLICATION audit_pub FOR TABLE t;
});
create_subscription($down, 'sub', $up);
$up->safe_psql('postgres', "INSERT INTO t SELECT g, 0, 'x' FROM generate_series(1, $rows) g");
wait_for_audit_catchup($up, $down, 'sub');
my $size = $down->safe_psql('postgres', 'SELECT ' . change_bytes());

# Values that compress little, so that the audit rows take room while they are written.
$up->safe_psql('postgres', q{
	UPDATE t SET v = 1, pad = (SELECT string_agg(md5(id::text || g), '') FROM generate_series(1, 100) g)});
my $grown = $size + 16 * 1024 * 1024;
poll_until($down, 'SELECT ' . change_bytes() . " > $grown", 't',
	'the worker writing the large transaction', $down);
wait_for_worker_pid($down, 'sub');
my $offset = -s $down->logfile;
kill_downstream($down, 'sub');
pass('downstream killed with SIGKILL while the worker wrote the transaction');

wait_for_audit_catchup($up, $down, 'sub');
unlike(slurp_file($down->logfile, $offset), qr/terminated by signal/, 'no process crashed after the restart');
is( $down->safe_psql('postgres', q{
		SELECT count(*), count(DISTINCT new_row->>'id'), min(changed_columns::text), max(changed_columns::text)
		FROM logical_audit.change WHERE op = 'UPDATE'}),
	"$rows|$rows|{v,pad}|{v,pad}", 'every UPDATE audited once, compared with the row\'s latest image');
is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.change WHERE op = 'UPDATE' AND new_row->>'pad' =
		(SELECT string_agg(md5((new_row->>'id') || g), '') FROM generate_series(1, 100) g)}),
	$rows, 'each audited value is the upstream\'s');
is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.transaction}), '2',
	'two upstream transactions, each recorded once');

done_testing();
