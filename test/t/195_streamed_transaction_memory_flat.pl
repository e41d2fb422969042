# The worker's memory stays flat whatever the size of an upstream transaction: a transaction of
# ~200 MB of row data, streamed by an upstream with logical_decoding_work_mem = 64kB, is audited
# exactly once while the worker's private memory (RssAnon, sampled from /proc during the run)
# stays far below the transaction's size.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use AuditTest;

my $rows = 150_000;
my ($up, $down) = new_audited_table(upstream_conf => ['logical_decoding_work_mem = 64kB']);
$up->safe_psql('postgres', 'ALTER TABLE t ADD COLUMN payload text');
my $pid = wait_for_worker_pid($down, 'sub');

# A kB figure of /proc/<pid>/status, 0 when the process is gone.
sub proc_kb
{
	my ($field) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return 0;
	my ($line) = grep { /^$field:/ } <$fh>;
	close $fh;
	return defined $line && $line =~ /(\d+)\s*kB/ ? $1 : 0;
}

# ~1.3 kB of hex per row, stored inline (below the TOAST threshold) and barely compressible.
$up->safe_psql('postgres', qq{
	INSERT INTO t SELECT i, (SELECT string_agg(md5(i::text || j::text), '') FROM generate_series(1, 40) j)
	FROM generate_series(1, $rows) i});
my $target = $up->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');

my ($peak, $spooled, $deadline) = (0, 0, time() + $PostgreSQL::Test::Utils::timeout_default);
my $spool_dir = $down->data_dir . '/pg_logical_audit';
while (time() < $deadline)
{
	my $rss = proc_kb('RssAnon');
	$peak = $rss if $rss > $peak;
	$spooled ||= scalar(() = glob("$spool_dir/*.stream"));
	last if $down->safe_psql('postgres',
		"SELECT flushed_lsn >= '$target' FROM logical_audit.status WHERE name = 'sub'") eq 't';
	usleep(100_000);
}
my $hwm = proc_kb('VmHWM');
diag("worker RssAnon peak ${peak} kB, VmHWM ${hwm} kB");

is( $down->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT new_row->>'id') || ' ' || sum(length(new_row->>'payload'))
		FROM logical_audit.change}),
	"$rows $rows " . ($rows * 1280), 'the whole transaction is audited once');
is(status_field($down, 'sub', 'pid'), $pid, 'by the same worker process');
ok($spooled, 'the transaction arrived streamed and went through a spool file');
ok($peak > 0 && $peak < 100 * 1024, "the worker's private memory stays under 100 MB (peak ${peak} kB)");
ok($peak < 50 * 1024, "and far below the transaction's ~200 MB (peak ${peak} kB)");

done_testing();
