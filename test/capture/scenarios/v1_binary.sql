-- Workload for v1_binary (protocol 1, binary on).
INSERT INTO binary_types VALUES (-2, 1234567890123, 3.14, 'hello', true, '2024-01-01 00:00:00+00', '\xdeadbeef',
	'{"k": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 0.5, '{1,2,3}');
INSERT INTO binary_types (i) VALUES (7);
UPDATE binary_types SET t = 'world', d = -1.25 WHERE i = -2;
DELETE FROM binary_types WHERE i = 7;
