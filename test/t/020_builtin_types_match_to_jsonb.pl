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

$up->safe_psql('postgres', q{
CREATE TABLE types (
	id int PRIMARY KEY,
	c_bool boolean, c_int2 smallint, c_int4 integer, c_int8 bigint,
	c_numeric numeric, c_numeric_scaled numeric(12,4), c_float4 real, c_float8 double precision,
	c_money money,
	c_text text, c_varchar varchar(20), c_bpchar char(6), c_name name, c_char "char",
	c_bytea bytea,
	c_date date, c_time time, c_timetz timetz, c_timestamp timestamp, c_timestamptz timestamptz,
	c_interval interval,
	c_uuid uuid, c_inet inet, c_cidr cidr, c_macaddr macaddr, c_macaddr8 macaddr8,
	c_bit bit(4), c_varbit varbit,
	c_json json, c_jsonb jsonb, c_jsonpath jsonpath, c_xml xml,
	c_point point, c_line line, c_lseg lseg, c_box box, c_path path, c_polygon polygon, c_circle circle,
	c_tsvector tsvector, c_tsquery tsquery,
	c_int4range int4range, c_numrange numrange, c_tstzrange tstzrange, c_daterange daterange,
	c_int8multirange int8multirange,
	c_oid oid, c_regclass regclass, c_regtype regtype, c_pg_lsn pg_lsn,
	c_int_array int[], c_text_array text[], c_int_2d int[], c_tstz_array timestamptz[],
	c_jsonb_array jsonb[], c_numeric_array numeric[], c_float8_array float8[], c_bool_array boolean[]
);
CREATE PUBLICATION audit_pub FOR TABLE types;
});
create_subscription($down, 'sub', $up);

$up->safe_psql('postgres', q{
INSERT INTO types VALUES (1,
	true, 32767, -2147483648, 9223372036854775807,
	12345678901234567890.123456789, 3.14, 1.1, 0.1,
	'1234.56',
	'quotes " and \ backslash, ünïcödé, tab	and' || chr(10) || 'newline', 'varchar', 'ab', 'a_name', 'x',
	'\x00ff10',
	'2024-02-29', '23:59:59.999999', '12:00:00+05:30', '2024-01-01 10:00:00.5', '2024-06-30 22:15:00.123456+02',
	'1 year 2 mons 3 days 04:05:06.7',
	'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.1.5/24', '10.0.0.0/8', '08:00:2b:01:02:03',
	'08:00:2b:01:02:03:04:05',
	B'1010', B'10110',
	'{"b": [1, 2, {"c": null}], "a": "x", "n": 1.50}', '{"nested": {"k": [true, false, 1.50, "s"]}}',
	'$.a[*] ? (@ > 1)', '<a attr="1">x &amp; y</a>',
	'(1.5,2)', '{1,-1,0}', '[(0,0),(1,1)]', '((0,0),(1,1))', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(2,0))',
	'<(1,1),2>',
	'a fat cat sat on a mat', 'fat & (rat | cat)',
	'[1,10)', '(1.5,2.5]', '[2024-01-01 00:00+00,2024-01-02 00:00+05)', '[2024-01-01,2024-02-01)',
	'{[1,3), [5,8)}',
	4294967295, 'pg_class', 'integer', '16/B374D848',
	'{1,NULL,3}', '{"a b","c,d","e\"f",NULL,"NULL",""}', '{{1,2},{3,4}}',
	'{"2024-01-01 00:00:00+00","2024-07-01 12:00:00+03"}',
	ARRAY['{"a": 1}'::jsonb, '[]', 'null', '"s"'], '{1.5,NaN,Infinity,-Infinity}',
	'{1e308,-0,NaN,-Infinity,2.5e-310}', '{t,f,NULL}');

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
