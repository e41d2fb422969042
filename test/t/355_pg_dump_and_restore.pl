# pg_dump and pg_restore --exit-on-error bring the whole audit into another database: the audit
# rows with their time partitions and indexes, the images, the subscriptions and each store's
# settings (retention, legal hold, partition interval), without one error; the restored store
# answers history() and row_as_of() as the original does and makes its own partitions.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my ($up, $down) = new_audited_table();
$up->safe_psql('postgres', q{
	ALTER TABLE t ADD v text, ADD doc text;
	ALTER TABLE t ALTER doc SET STORAGE EXTERNAL;
});
$up->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'a', repeat('x', 3000) FROM generate_series(1, 100) g;
	UPDATE t SET v = 'b' WHERE id <= 10;
	DELETE FROM t WHERE id = 100;
	SELECT pg_logical_emit_message(true, 'note', 'kept');
});
wait_for_audit_catchup($up, $down, 'sub');
$down->safe_psql('postgres', q{
	SELECT logical_audit.set_retention('sub', '400 days');
	SELECT logical_audit.set_legal_hold('sub', true);
	SELECT logical_audit.stop('sub');
});

my $dump = $PostgreSQL::Test::Utils::tmp_check . '/audit.dump';
ok($down->run_log([ 'pg_dump', '-Fc', '-f', $dump, '-d', $down->connstr('postgres') ]), 'pg_dump succeeds');
$down->safe_psql('postgres', 'CREATE DATABASE restored');
ok($down->run_log([ 'pg_restore', '--exit-on-error', '-d', $down->connstr('restored'), $dump ]),
	'pg_restore --exit-on-error succeeds');

# The same answer in both databases.
sub same
{
	my ($sql, $what) = @_;
	my $original = $down->safe_psql('postgres', $sql);
	is($down->safe_psql('restored', $sql), $original, $what);
	return $original;
}
same(q{SELECT count(*), md5(string_agg(c::text, ',' ORDER BY commit_lsn, ordinal)) FROM logical_audit.change c},
	'the change rows');
same(q{SELECT count(*), md5(string_agg(x::text, ',' ORDER BY commit_lsn)) FROM logical_audit.transaction x},
	'the transactions');
same(q{SELECT string_agg(content::text, ',') FROM logical_audit.message}, 'the messages');
same(q{SELECT count(*), md5(string_agg(i::text, ',' ORDER BY row_key)) FROM logical_audit.row_image i}, 'the images');
is( same(q{SELECT name, partition_interval, retention, legal_hold FROM logical_audit.store}, 'the store settings'),
	'sub|1 mon|400 days|t', 'which are the ones set');
same(q{SELECT name, conninfo, publications, slot_name, options FROM logical_audit.subscription}, 'the subscription');
is( same(q{SELECT string_agg(op || ' ' || (new_row->>'v') || ' ' || length(new_row->>'doc'), ',' ORDER BY commit_lsn)
           FROM logical_audit.history('public', 't', '{"id": 1}')}, 'history() of a row'),
	'INSERT a 3000,UPDATE b 3000', 'with its unchanged TOAST value resolved');
same(q{SELECT logical_audit.row_as_of('public', 't', '{"id": 100}', now()) IS NULL}, 'row_as_of() of a deleted row');

# The restored store makes partitions with their indexes, as the original does.
$down->safe_psql('restored', q{
	SELECT logical_audit.create_partitions(id, now() + interval '3 months') FROM logical_audit.subscription});
is( $down->safe_psql('restored', q{
		SELECT count(*) FROM logical_audit.partitions p JOIN pg_index i ON i.indrelid = p.partition::regclass
		WHERE p.from_time > now() + interval '2 months'}),
	'3', 'a time partition made after the restore has its index, in each audit table');

done_testing();
