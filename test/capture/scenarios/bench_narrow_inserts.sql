-- Workload for bench_narrow_inserts: 20,000 rows in 1000-row transactions.
DO $$
BEGIN
	FOR b IN 0..19 LOOP
		INSERT INTO narrow
		SELECT i, i % 1000, md5(i::text), timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second'
		FROM generate_series(b * 1000 + 1, b * 1000 + 1000) AS i;
		COMMIT;
	END LOOP;
END
$$;
