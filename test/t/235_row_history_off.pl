# With the option row_history false, change rows carry no row_key and an UPDATE is not completed
# from the row's latest audited image: changed_columns is NULL and unchanged TOAST values stay
# absent under the default replica identity, while a full old row (REPLICA IDENTITY FULL) still
# gives both. history() and row_as_of() then match rows by containment.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream');
$up->safe_psql('postgres', q{
	CREATE TABLE acct (id int PRIMARY KEY, qty int, note text);
	CREATE TABLE by_full (id int PRIMARY KEY, qty int, note text);
	ALTER TABLE by_full REPLICA IDENTITY FULL;
	ALTER TABLE acct ALTER COLUMN note SET STORAGE EXTERNAL;
	ALTER TABLE by_full ALTER COLUMN note SET STORAGE EXTERNAL;
	CREATE PUBLICATION audit_pub FOR TABLE acct, by_full;
});
create_subscription($down, 'on', $up);
create_subscription($down, 'off', $up, options => '{"row_history": false}');

$up->safe_psql('postgres', q{
	INSERT INTO acct VALUES (1, 1, repeat('n', 5000));
	INSERT INTO by_full VALUES (1, 1, repeat('n', 5000));
	UPDATE acct SET qty = 2 WHERE id = 1;
	UPDATE by_full SET qty = 2 WHERE id = 1;
});
wait_for_audit_catchup($up, $down, $_) for qw(on off);

# Per subscription and table, the UPDATE's "changed_columns|note length or absent", and whether
# any of its rows has a row_key.
sub update_of
{
	my ($sub, $table) = @_;
	return $down->safe_psql('postgres', qq{
		SELECT coalesce(array_to_string(changed_columns, ','), 'NULL') || '|'
		       || coalesce(length(new_row->>'note')::text, 'absent')
		FROM logical_audit.change WHERE subscription = '$sub' AND table_name = '$table' AND op = 'UPDATE'});
}

is(update_of('on', 'acct'), 'qty|5000', 'with row_history (the default) the image completes the update');
is(update_of('off', 'acct'), 'NULL|absent', 'without it changed_columns is NULL and the TOAST value absent');
is(update_of('off', 'by_full'), 'qty|5000', 'a full old row still completes the update');
is( $down->safe_psql('postgres',
		q{SELECT st.name || ':' || count(i.row_key) FROM logical_audit.store st
		  LEFT JOIN logical_audit.relation r ON r.subscription_id = st.subscription_id
		  LEFT JOIN logical_audit.row_image i ON i.relation_id = r.id GROUP BY st.name ORDER BY st.name}),
	"off:0\non:1", 'only the subscription with row_history keeps images of its keyed rows');
is( $down->safe_psql('postgres',
		q{SELECT string_agg(op, ',' ORDER BY commit_lsn, ordinal) FROM logical_audit.history('public', 'acct', '{"id": 1}', 'off')}),
	'INSERT,UPDATE', 'history() finds the row by containment');

done_testing();
