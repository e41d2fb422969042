# A crash between the local commit of a COMMIT PREPARED and the removal of its spool file leaves a
# .prepared file that the upstream will never ask for again. Simulated here by putting the file
# back after its transaction was audited: the next session removes it, audits nothing twice, and
# keeps the file of a transaction still prepared.
use strict;
use warnings;
use File::Copy;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table(upstream_conf => ['max_prepared_transactions = 10'], subscriptions => []);
create_subscription($down, 'sub', $up, options => '{"two_phase": true}');
my $spool_dir = $down->data_dir . '/pg_logical_audit';

# Runs SQL upstream and waits until the downstream has audited up to there.
sub upstream_step { audited_step($up, $down, 'sub', @_) }

upstream_step(q{BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'done'});
upstream_step(q{BEGIN; INSERT INTO t VALUES (2); PREPARE TRANSACTION 'pending'});
my @files = sort glob("$spool_dir/*.prepared");
is(scalar(@files), 2, 'two prepared transactions spooled');
copy($_, "$_.saved") or die "copy $_: $!" for @files;

upstream_step(q{COMMIT PREPARED 'done'});
# Put back the file of the committed one, as a crash before its removal would have left it.
for my $file (@files)
{
	move("$file.saved", $file) or die "move $file: $!" unless -e $file;
	unlink("$file.saved");
}
is(scalar(() = glob("$spool_dir/*.prepared")), 2, 'the committed transaction\'s file is back');

$down->safe_psql('postgres', q{SELECT logical_audit.stop('sub'); SELECT logical_audit.start('sub')});
wait_for_state($down, 'sub', 'streaming');
is(scalar(() = glob("$spool_dir/*.prepared")), 1, 'the next session removes it, and keeps the pending one');

upstream_step(q{COMMIT PREPARED 'pending'; INSERT INTO t VALUES (3)});
is( $down->safe_psql('postgres', q{
		SELECT string_agg(c.new_row->>'id' || ':' || coalesce(t.gid, '-'), ',' ORDER BY c.commit_lsn)
		FROM logical_audit.change c JOIN logical_audit.transaction t USING (subscription, commit_lsn)}),
	'1:done,2:pending,3:-', 'every transaction audited once');
is(scalar(() = glob("$spool_dir/*")), 0, 'no spool file left');

done_testing();
