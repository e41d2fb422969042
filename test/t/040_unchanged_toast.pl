# A TOASTed column that an update leaves unchanged is not sent by pgoutput (kind 'u'): when no
# audited image of the row holds its value (here the row predates the subscription), the audit
# leaves it out of new_row and names it in unchanged_toast, never recording it as NULL. A value
# that is sent (changed, or set to NULL) is recorded as usual.
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
	CREATE TABLE doc (id int PRIMARY KEY, body text, extra text, n int);
	-- Out of line and uncompressed, whatever the value: a stored TOAST pointer for sure.
	ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL, ALTER COLUMN extra SET STORAGE EXTERNAL;
	CREATE PUBLICATION audit_pub FOR TABLE doc;
	INSERT INTO doc VALUES (1, repeat('b', 10000), repeat('e', 9000), 1);
});
create_subscription($down, 'sub', $up);

$up->safe_psql('postgres', q{
	INSERT INTO doc VALUES (2, repeat('b', 10000), repeat('e', 9000), 1);
	UPDATE doc SET n = 2 WHERE id = 1;                       -- body, extra unchanged
	UPDATE doc SET extra = 'short now', n = 3 WHERE id = 1;  -- body unchanged
	UPDATE doc SET body = NULL, n = NULL WHERE id = 1;        -- both sent
});
wait_for_audit_catchup($up, $down, 'sub');

# The audited updates in upstream order: "columns of new_row|unchanged_toast".
my $updates = $down->safe_psql('postgres', q{
	SELECT (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(new_row) k) || '|'
	       || coalesce(array_to_string(ARRAY(SELECT unnest(unchanged_toast) ORDER BY 1), ','), '')
	FROM logical_audit.change WHERE op = 'UPDATE' ORDER BY commit_lsn, ordinal});
is($updates, join("\n", 'id,n|body,extra', 'extra,id,n|body', 'body,extra,id,n|'),
	'unchanged TOAST columns are left out of new_row and listed in unchanged_toast');

is( $down->safe_psql('postgres', q{
		SELECT count(*) FROM logical_audit.change c
		WHERE EXISTS (SELECT FROM unnest(c.unchanged_toast) u WHERE c.new_row ? u)}),
	'0', 'an unchanged TOAST value is never recorded as NULL');

my $last = $down->safe_psql('postgres', q{
	SELECT new_row FROM logical_audit.change WHERE op = 'UPDATE' ORDER BY commit_lsn DESC, ordinal DESC LIMIT 1});
jsonb_is($down, "SELECT '$last'::jsonb", '{"id": 1, "body": null, "extra": "short now", "n": null}',
	'values that were sent are recorded, NULL as JSON null');

is( $down->safe_psql('postgres', q{
		SELECT length(new_row->>'body') || ' ' || length(new_row->>'extra') || ' '
		       || coalesce(cardinality(unchanged_toast), 0)
		FROM logical_audit.change WHERE op = 'INSERT'}),
	'10000 9000 0', 'the inserted row carries the whole TOASTed values');

done_testing();
