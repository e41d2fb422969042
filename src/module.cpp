// The extension's module: PostgreSQL's magic block and load-time setup.
#include "pg.hpp"

extern "C" {
PG_MODULE_MAGIC;
}
