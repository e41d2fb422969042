# Malformed protocol bytes from the upstream (here a fake walsender, so that the bytes can be
# anything): a valid transaction, then one whose Insert has a column value running past the end of
# the message, then a valid one. The first is audited and confirmed; the bad message is an ERROR
# naming its LSN and byte offset in status.last_error; the worker never confirms (to the upstream or
# in status.flushed_lsn) past the first transaction, records nothing of the second or third, retries
# from the end of the first (the fake replays its script from there) and no process crashes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use AuditTest;
use FakeWalsender qw(lsn lsn_text pgo_begin pgo_commit pgo_relation pgo_insert pgo_tuple keepalive);

my $relation_id = 16390;
my $relation = pgo_relation($relation_id, 'public', 'audited', 'd', [ 1, 'id', 23, -1 ], [ 0, 'v', 25, -1 ]);

# Transaction 1 (valid), 2 (its Insert is corrupt) and 3 (valid), at increasing LSNs.
my %t1 = (xid => 1001, first_lsn => lsn('0/3000028'), commit_lsn => lsn('0/3000100'), end_lsn => lsn('0/3000130'));
my %t2 = (xid => 1002, first_lsn => lsn('0/3000130'), commit_lsn => lsn('0/3000200'), end_lsn => lsn('0/3000230'));
my %t3 = (xid => 1003, first_lsn => lsn('0/3000230'), commit_lsn => lsn('0/3000300'), end_lsn => lsn('0/3000330'));
my $bad_lsn = lsn('0/30001A8');

# The corrupt Insert: column 1 is fine, column 2 ('t') says 1000 bytes of text and two follow.
# Offsets: 'I' 0, relation id 1-4, 'N' 5, column count 6-7, column 1 8-13, column 2's kind byte 14,
# its length 15-18, its value from 19.
my $bad_insert = pack('a N a n', 'I', $relation_id, 'N', 2)
  . pack('a N/a*', 't', '2')
  . pack('a N a*', 't', 1000, 'xy');
my ($bad_column_at, $bad_value_at) = (14, 19);

my @script = (
	FakeWalsender->transaction(%t1,
		messages => [ [ 0, $relation ],
			[ lsn('0/3000060'), pgo_insert($relation_id, pgo_tuple([ 't', '1' ], [ 't', 'first' ])) ] ]),
	keepalive($t1{end_lsn}, 1),
	# Hold the rest until the worker has confirmed the first transaction: what follows may not move it.
	FakeWalsender->wait_flush($t1{end_lsn}, $PostgreSQL::Test::Utils::timeout_default),
	FakeWalsender->transaction(%t2, messages => [ [ 0, $relation ], [ $bad_lsn, $bad_insert ] ]),
	FakeWalsender->transaction(%t3,
		messages => [ [ 0, $relation ],
			[ lsn('0/3000258'), pgo_insert($relation_id, pgo_tuple([ 't', '3' ], [ 't', 'third' ])) ] ]),
	keepalive($t3{end_lsn}, 0));

my $fake = FakeWalsender->new(
	script => \@script,
	log => PostgreSQL::Test::Utils::tempdir() . '/fake_walsender.log',
	publications => ['audit_pub'],
	xlogpos => $t3{end_lsn});

my $down = new_downstream('downstream');
create_subscription($down, 'sub', undef,
	conninfo => $fake->conninfo,
	create_slot => 0,
	options => '{"streaming": false}',
	wait => 0);

my $error_time = wait_for_new_error($down, 'sub', undef);
my $last_error = status_field($down, 'sub', 'last_error');
note("last_error: $last_error");
like($last_error, qr/malformed pgoutput insert message/, 'status.last_error says the insert message is malformed');
like($last_error, qr/truncated/i, 'and that a value runs past its end');
my $bad_lsn_text = lsn_text($bad_lsn);
like($last_error, qr{\bLSN \Q$bad_lsn_text\E\b}, "it names the LSN of the bad message, $bad_lsn_text");
like($last_error, qr/\bxid $t2{xid}\b/, 'and the xid of its transaction');
my ($offset) = $last_error =~ /byte offset (\d+)/;
ok(defined $offset && $offset >= $bad_column_at && $offset <= $bad_value_at,
	"it names a byte offset within the corrupt column ($bad_column_at to $bad_value_at)")
  or diag('byte offset: ' . ($offset // 'none'));

# A second failure: the worker reconnected and met the same bad message again.
wait_for_new_error($down, 'sub', $error_time);
like(status_field($down, 'sub', 'last_error'), qr/malformed pgoutput insert message.*\Q$bad_lsn_text\E/,
	'the retry fails on the same message');

my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
usleep(100_000) while $fake->start_lsns < 2 && time() < $deadline;
my @starts = $fake->start_lsns;
cmp_ok(scalar @starts, '>=', 2, 'the worker retried: at least two replication connections')
  or diag($fake->log_text);
my $retry_start = $starts[1] // 0;
ok($retry_start > $t1{commit_lsn} && $retry_start <= $t1{end_lsn},
	'the retry starts after the first transaction and not past its end')
  or diag('retry started at ' . lsn_text($retry_start));

my @flushes = $fake->flush_lsns;
ok((grep { $_ == $t1{end_lsn} } @flushes), 'the fake saw the first transaction confirmed')
  or diag($fake->log_text);
is_deeply([ map { lsn_text($_) } grep { $_ > $t1{end_lsn} } @flushes ], [],
	'no standby status update confirmed past the end of the first transaction');
my $end1 = lsn_text($t1{end_lsn});
is( $down->safe_psql('postgres',
		"SELECT flushed_lsn <= '$end1'::pg_lsn FROM logical_audit.status WHERE name = 'sub'"),
	't', 'status.flushed_lsn stays at or before the end of the first transaction');

is( $down->safe_psql('postgres', q{
		SELECT string_agg(format('%s %s.%s %s', op, schema_name, table_name, new_row), ';' ORDER BY commit_lsn, ordinal)
		FROM logical_audit.change WHERE subscription = 'sub'}),
	'INSERT public.audited {"v": "first", "id": 1}',
	'the first transaction is audited, one change; nothing of the second or third');
is( $down->safe_psql('postgres', q{
		SELECT string_agg(format('%s %s %s %s', xid, commit_lsn, end_lsn, change_count), ';' ORDER BY commit_lsn)
		FROM logical_audit.transaction WHERE subscription = 'sub'}),
	sprintf('%d %s %s 1', $t1{xid}, lsn_text($t1{commit_lsn}), $end1),
	'one transaction row, the first one');

is_deeply([ $fake->unknown_queries ], [], 'the fake answered every query the worker sent');
my $log = slurp_file($down->logfile);
unlike($log, qr/terminated by signal/, 'no process crashed');

note("what the fake walsender saw:\n" . $fake->log_text);
$fake->stop;
done_testing();
