/*
 * bgw.h — what the inbox worker (worker.c) and the backfill worker
 * (backfill.c) share: attaching to a shared-memory slot and the database,
 * the transaction and heartbeat helpers, and the idle wait.  Only those two
 * files include it.
 */
#ifndef JUNCTION_BGW_H
#define JUNCTION_BGW_H

#include "postgres.h"

/*
 * Set up a background worker: signals, our shared-memory slot (freed at
 * exit), a connection to junction.database with search_path pinned to
 * pg_catalog, pg_temp, and the application name shown in pg_stat_activity.
 */
extern void junction_bgw_start(int slot, const char *appname);

/* Top of each loop round: handle interrupts and a pending SIGHUP. */
extern void junction_bgw_check_interrupts(void);

/* Record a heartbeat and the counters of the last batch in our slot. */
extern void junction_bgw_heartbeat(int processed, int quarantined);

/* Start a transaction with a snapshot, as a worker must before running SQL. */
extern void junction_bgw_begin_tx(const char *activity);

/* Commit and report, the counterpart of junction_bgw_begin_tx. */
extern void junction_bgw_commit_tx(void);

/* Sleep until woken or junction.poll_interval has passed. */
extern void junction_bgw_wait(void);

/*
 * Transient errors (a deadlock, a cancel, a lost Citus connection, ...) roll a
 * worker's work back and retry it after junction_bgw_retry_ms(failures) instead
 * of ending the worker: call junction_bgw_retry_or_rethrow in a PG_CATCH, with
 * a context outside the transaction and the count of consecutive failures.
 */
extern bool junction_bgw_retryable(int sqlerrcode);
extern int	junction_bgw_retry_ms(int failures);
extern void junction_bgw_log_and_pause(ErrorData *edata, const char *what, int failures);
extern void junction_bgw_retry_or_rethrow(MemoryContext cxt, const char *what, int failures);

#endif							/* JUNCTION_BGW_H */
