# With the option binary the upstream sends column values in their types' binary form; the audit
# reads them with the downstream types' receive functions and records exactly the rows text mode
# records: new and old rows of two subscriptions of the same upstream, one binary and one text,
# are equal to each other and to the upstream's to_jsonb(row), for every built-in type family,
# NULLs, and enums, domains and composites (with user types nested in them) whose oids differ
# downstream. The downstream prints values in other styles than the upstream (DateStyle,
# IntervalStyle, extra_float_digits, bytea_output): the rows do not depend on them.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream');
my $down = new_downstream('downstream',
	conf => [ "DateStyle = 'SQL, DMY'", 'IntervalStyle = iso_8601', 'extra_float_digits = 0', 'bytea_output = escape' ]);

my $shared_types = q{
	CREATE TYPE mood AS ENUM ('calm', 'angry', 'a "quoted" one');
	CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
	CREATE DOMAIN label AS text;
	CREATE TYPE pair AS (a integer, b text, at timestamptz, m mood, ms mood[]);
};
# Created on both sides, with other oids downstream (the extra type shifts them): binary arrays
# and records name their element and field types by oid.
$down->safe_psql('postgres', "CREATE TYPE padding AS (x int);\n$shared_types");
$up->safe_psql('postgres', $shared_types . "CREATE TABLE types (\n\tid int PRIMARY KEY,\n$BUILTIN_TYPE_COLUMNS,\n" . q{
	c_interval_array interval[], c_bytea_array bytea[],
	u_mood mood, u_posint posint, u_label label, u_pair pair, u_pair_array pair[], u_mood_array mood[]
);
ALTER TABLE types REPLICA IDENTITY FULL;
CREATE PUBLICATION audit_pub FOR TABLE types;
});
create_subscription($down, 'text_sub', $up, options => '{"binary": false}');
create_subscription($down, 'binary_sub', $up, options => '{"binary": true}');

$up->safe_psql('postgres', "INSERT INTO types VALUES (1,\n$BUILTIN_TYPE_VALUES,\n" . q{
	'{"1 day 02:00:00","-3 mons"}', '{"\\x00ff",NULL}',
	'angry', 42, 'labelled', ROW(7, 'seven', '2024-12-24 18:00:00+01', 'calm', '{angry,NULL}'),
	ARRAY[ROW(1, 'one', NULL, 'a "quoted" one', '{}')::pair, NULL], '{calm,"a \"quoted\" one",NULL}');

INSERT INTO types (id, c_int8, c_numeric, c_numeric_scaled, c_float4, c_float8, c_money, c_text, c_bpchar,
	c_bytea, c_date, c_time, c_timetz, c_timestamp, c_timestamptz, c_interval, c_json, c_jsonb,
	c_int4range, c_tstzrange, c_int_array, c_text_array, u_pair, u_pair_array, u_mood_array)
VALUES
	(2, -9223372036854775808, 'NaN', -0.0001, 'NaN', 'Infinity', '-0.01', '', '',
	 '\x', 'infinity', '00:00', '00:00+00', '-infinity', 'infinity', '-1 days -00:00:01', '[]', '{}',
	 'empty', '(,2024-01-01 00:00+00]', '{}', '{}', ROW(NULL, NULL, NULL, NULL, NULL), '{}', '{}'),
	(3, 0, 'Infinity', 99999999.9999, 'Infinity', '-Infinity', '0', 'x', 'abcdef',
	 '\x00', '-infinity', '24:00', '23:59:59-12', 'infinity', '-infinity', '0', '"a string"', '123.456e3',
	 '(,)', '[-infinity,infinity]', '{-1}', '{" "}', ROW(-1, '', 'infinity', 'angry', '{calm}'), NULL, NULL),
	(4, 1, '-Infinity', 0, 3.4e38, 1e-310, '1', NULL, NULL,
	 NULL, '0044-03-15 BC', NULL, NULL, '0001-01-01 00:00:00 BC', '1999-12-31 23:59:59.999999-08',
	 '-178000000 years', 'null', 'null', NULL, NULL, '{NULL}', '{NULL}', NULL, '{NULL}', '{NULL}'),
	(5, NULL, '0.00000000000000000001', NULL, -0, -0, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO types (id) VALUES (6);
});
my $before = upstream_images();

# Full old rows and new rows, then full old rows again.
$up->safe_psql('postgres', 'UPDATE types SET id = id + 100');
my $after = upstream_images();
$up->safe_psql('postgres', 'DELETE FROM types');
wait_for_audit_catchup($up, $down, $_) for qw(text_sub binary_sub);

# Row id => to_jsonb(row) text, as the upstream computes it for the current rows.
sub upstream_images
{
	my %images = map { split /\|/, $_, 2 } split /\n/,
	  upstream_value($up, q{SELECT id || '|' || to_jsonb(t)::text FROM types t ORDER BY id});
	return \%images;
}

# "op image id" => jsonb text of the image, for the rows a subscription recorded.
sub audited_images
{
	my ($name) = @_;
	my %images;
	for my $line (split /\n/, $down->safe_psql('postgres', qq{
		SELECT op || ' ' || image || ' ' || (row->>'id') || '|' || row::text
		FROM logical_audit.change c,
		     LATERAL (VALUES ('old_row', c.old_row), ('new_row', c.new_row)) AS i(image, row)
		WHERE c.subscription = '$name' AND row IS NOT NULL}))
	{
		my ($key, $row) = split /\|/, $line, 2;
		$images{$key} = $row;
	}
	return \%images;
}

my %expected;
for my $id (keys %$before)
{
	$expected{"INSERT new_row $id"} = $before->{$id};
	$expected{"UPDATE old_row $id"} = $before->{$id};
	$expected{"UPDATE new_row " . ($id + 100)} = $after->{ $id + 100 };
	$expected{"DELETE old_row " . ($id + 100)} = $after->{ $id + 100 };
}
# The upstream's jsonb text is compared with the downstream's: both canonical.
my $text = audited_images('text_sub');
my $binary = audited_images('binary_sub');

is_deeply([ sort keys %$binary ], [ sort keys %expected ], 'binary mode: one image per upstream row and change');
is_deeply([ sort keys %$text ], [ sort keys %expected ], 'text mode: one image per upstream row and change');
for my $key (sort keys %expected)
{
	is($binary->{$key}, $expected{$key}, "binary mode: $key equals the upstream's to_jsonb");
	is($binary->{$key}, $text->{$key}, "binary mode: $key equals text mode's");
}

# Each walsender shows its START_REPLICATION command: only the binary subscription asked for binary.
is( $up->safe_psql('postgres', q{
		SELECT string_agg(application_name || ' ' || (query LIKE '%binary ''true''%'), ', ' ORDER BY application_name)
		FROM pg_stat_activity WHERE backend_type = 'walsender'}),
	'binary_sub true, text_sub false', 'the binary subscription streams in binary, the text one in text');

done_testing();
