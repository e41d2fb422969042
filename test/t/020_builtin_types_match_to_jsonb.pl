# new_row and old_row equal to_jsonb(row) as the upstream itself computes it (with TimeZone UTC,
# as the worker renders timestamptz), for a column of every built-in type family and for edge
# values: NaN and infinities, NULLs, nested json, arrays, bytea, dates BC.
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

$up->safe_psql('postgres', qq{
CREATE TABLE types (
	id int PRIMARY KEY,
$BUILTIN_TYPE_COLUMNS
);
CREATE PUBLICATION audit_pub FOR TABLE types;
});
create_subscription($down, 'sub', $up);

$up->safe_psql('postgres', "INSERT INTO types VALUES (1,\n$BUILTIN_TYPE_VALUES);\n" . q{

INSERT INTO types (id, c_int8, c_numeric, c_numeric_scaled, c_float4, c_float8, c_money, c_text, c_bpchar,
	c_bytea, c_date, c_time, c_timetz, c_timestamp, c_timestamptz, c_interval, c_json, c_jsonb,
	c_int4range, c_tstzrange, c_int_array, c_text_array)
VALUES
	(2, -9223372036854775808, 'NaN', -0.0001, 'NaN', 'Infinity', '-0.01', '', '',
	 '\x', 'infinity', '00:00', '00:00+00', '-infinity', 'infinity', '-1 days -00:00:01', '[]', '{}',
	 'empty', '(,2024-01-01 00:00+00]', '{}', '{}'),
	(3, 0, 'Infinity', 99999999.9999, 'Infinity', '-Infinity', '0', 'x', 'abcdef',
	 '\x00', '-infinity', '24:00', '23:59:59-12', 'infinity', '-infinity', '0', '"a string"', '123.456e3',
	 '(,)', '[-infinity,infinity]', '{-1}', '{" "}'),
	(4, 1, '-Infinity', 0, 3.4e38, 1e-310, '1', NULL, NULL,
	 NULL, '0044-03-15 BC', NULL, NULL, '0001-01-01 00:00:00 BC', '1999-12-31 23:59:59.999999-08',
	 '-178000000 years', 'null', 'null', NULL, NULL, '{NULL}', '{NULL}'),
	(5, NULL, '0.00000000000000000001', NULL, -0, -0, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO types (id) VALUES (6);
});

wait_for_audit_catchup($up, $down, 'sub');

# Row id => column => jsonb text of the value, from "id|key|value" lines.
sub by_row_and_column
{
	my ($lines) = @_;
	my %rows;
	for my $line (split /\n/, $lines)
	{
		my ($id, $key, $value) = split /\|/, $line, 3;
		$rows{$id}{$key} = $value;
	}
	return \%rows;
}

# Compares audited images (op, column old_row or new_row) with the upstream's to_jsonb values.
sub compare_images
{
	my ($expected, $op, $column) = @_;
	my $actual = by_row_and_column($down->safe_psql('postgres', qq{
		SELECT (c.$column->>'id') || '|' || e.key || '|' || e.value::text
		FROM logical_audit.change c, jsonb_each(c.$column) e
		WHERE c.subscription = 'sub' AND c.table_name = 'types' AND c.op = '$op'
		ORDER BY (c.$column->>'id')::int, e.key}));

	is_deeply([ sort keys %$actual ], [ sort keys %$expected ], "$op: one $column per upstream row");
	for my $id (sort { $a <=> $b } keys %$expected)
	{
		for my $key (sort keys %{ $expected->{$id} })
		{
			is($actual->{$id}{$key}, $expected->{$id}{$key}, "$op row $id, $column.$key");
		}
		is_deeply([ sort keys %{ $actual->{$id} // {} } ], [ sort keys %{ $expected->{$id} } ],
			"$op row $id: $column has exactly the table's columns");
	}
}

my $upstream_images = by_row_and_column(upstream_value($up, q{
	SELECT t.id || '|' || e.key || '|' || e.value::text
	FROM types t, jsonb_each(to_jsonb(t)) e ORDER BY t.id, e.key}));
compare_images($upstream_images, 'INSERT', 'new_row');

# Under REPLICA IDENTITY FULL a delete sends every column of the old row: it too must match.
$up->safe_psql('postgres', q{
	ALTER TABLE types REPLICA IDENTITY FULL;
	DELETE FROM types;
});
wait_for_audit_catchup($up, $down, 'sub');
compare_images($upstream_images, 'DELETE', 'old_row');

done_testing();
