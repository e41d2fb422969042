-- Table for v2_streaming: transactions larger than logical_decoding_work_mem (64kB).
CREATE TABLE big (id int PRIMARY KEY, payload text);
CREATE PUBLICATION pub_stream FOR TABLE big;
