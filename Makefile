# PGXS build of the logical_audit extension: make, make install, make installcheck.
EXTENSION = logical_audit
MODULE_big = logical_audit
DATA = logical_audit--1.0.sql logical_audit--1.0--1.1.sql logical_audit--1.1--1.2.sql logical_audit--1.2--1.3.sql
OBJS = $(patsubst %.cpp,%.o,$(sort $(wildcard src/*.cpp src/*/*.cpp)))

REGRESS = $(basename $(notdir $(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf --encoding=UTF8 --no-locale

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(shell $(PG_CONFIG) --includedir)
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-register -Isrc
SHLIB_LINK = -lpq -lstdc++

# PGXS would also compile each file to LLVM bitcode with clang, ignoring PG_CXXFLAGS.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# TAP suites (test/t/*.pl, two clusters each) against the installed extension:
# make prove-installcheck [PROVE_TESTS=test/t/010_every_op_audited.pl] [PROVE_FLAGS=--verbose]
PROVE_TESTS ?= $(sort $(wildcard test/t/*.pl))
.PHONY: prove-installcheck
prove-installcheck:
	$(prove_installcheck)
