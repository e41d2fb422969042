-- Workload for bench_wide_rows: 2,000 rows in 1000-row transactions.
DO $$
BEGIN
	FOR b IN 0..1 LOOP
		INSERT INTO wide
		SELECT i, i * 7, (i % 30000)::smallint, i::bigint * 1000003, i / 8.0, i / 3.0, i / 7.0, i % 2 = 0,
			'text ' || i, 'v' || i, date '2024-01-01' + i, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute',
			md5(i::text)::uuid, jsonb_build_object('i', i, 'even', i % 2 = 0), ARRAY[i, i + 1, i + 2],
			decode(md5(i::text), 'hex'), i * interval '1 second', ('10.0.' || (i % 256) || '.1')::inet, 'c' || (i % 10),
			CASE WHEN i % 5 = 0 THEN NULL ELSE 'note ' || i END
		FROM generate_series(b * 1000 + 1, b * 1000 + 1000) AS i;
		COMMIT;
	END LOOP;
END
$$;
