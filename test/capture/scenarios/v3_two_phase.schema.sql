-- Table for v3_two_phase: prepared transactions, one of them streamed.
CREATE TABLE orders (id int PRIMARY KEY, item text);
CREATE PUBLICATION pub_two_phase FOR TABLE orders;
