# junction — PGXS build.  make PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config with_llvm=no
MODULE_big = junction
OBJS = src/junction.o src/signature.o src/verify.o src/drain.o src/bgw.o src/worker.o src/backfill.o src/backoff.o src/http.o src/samples.o
EXTENSION = junction
DATA_built = src/junction--0.3.0.sql
# earlier releases' install scripts (verbatim) and the upgrade scripts between releases
DATA = src/upgrade/junction--0.1.0.sql src/upgrade/junction--0.1.0--0.2.0.sql src/upgrade/junction--0.2.0.sql src/upgrade/junction--0.2.0--0.3.0.sql
SHLIB_LINK = -lcurl -lcrypto
PG_CPPFLAGS = -Isrc
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Werror=implicit-function-declaration

# The regress suite, in order (test/run-tests.sh runs it on a throwaway cluster).
REGRESS = setup verify verify_vectors inbox worker pipeline_typing samples webhooks api api_base_url ordering security provider lint workout_streams fidelity backfill_checkpoints lab sense daily
REGRESS_OPTS = --use-existing

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The install script is the concatenation of src/install/*.sql in name order (src/install holds the
# install script's fragments; sql/ and expected/ are the pg_regress inputs and outputs).
src/junction--0.3.0.sql: $(sort $(wildcard src/install/*.sql))
	cat $^ > $@

# Tests run in a database the worker serves (created by test/run-tests.sh).
CONTRIB_TESTDB = junction_regress
