-- Workload for bench_updates_full: 10,000 single-column updates in 1000-row transactions.
DO $$
BEGIN
	FOR b IN 1..10 LOOP
		UPDATE counters SET n = n + 1;
		COMMIT;
	END LOOP;
END
$$;
