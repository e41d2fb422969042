# PGXS build of the logical_audit extension: make, make install, make installcheck.
EXTENSION = logical_audit
MODULE_big = logical_audit
DATA = logical_audit--1.0.sql
OBJS = src/module.o src/pgoutput/decoder.o src/sql/pgoutput_to_jsonb.o

REGRESS = pgoutput_to_jsonb
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf --encoding=UTF8 --no-locale

PG_CONFIG ?= pg_config
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-register -Isrc
SHLIB_LINK = -lstdc++

# PGXS would also compile each file to LLVM bitcode with clang, ignoring PG_CXXFLAGS.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

