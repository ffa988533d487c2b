/*
 * imgembed.model_stats: cluster-wide counters per database, model, tower and path, the way
 * pg_stat_statements keeps its own, in shared memory.
 *
 * Where the memory comes from:
 * - PostgreSQL 17 and later: a segment of the DSM registry, made by the first backend that asks
 *   (imgembed.load_settings(), which every PL/Python bootstrap calls): no preload needed;
 * - PostgreSQL 15 and 16: the main shared memory, which only a library in shared_preload_libraries
 *   may request. Without it the statistics are off: nothing is counted, and reading them returns
 *   no row with a NOTICE that says why. The embedding path never fails for want of them.
 *
 * Nothing here writes a table or WAL, so a hot standby and a read-only transaction count too. A
 * crashed backend makes the postmaster reinitialise shared memory (both kinds): the counters then
 * start again from zero with a new stats_reset, never from a half-written entry.
 *
 * The backend's Python records through imgembed_stats_record/imgembed_stats_refused, called with
 * ctypes (the library is loaded RTLD_GLOBAL): they are plain C that never raises a PostgreSQL
 * error (no palloc, no ereport), since an error could not unwind through Python's frames, and
 * they do nothing until this backend attached. Workers outside the server report through
 * imgembed.report_worker_batch(), checked like any SQL function.
 *
 * Layout: a fixed table of entries. A key (database, model name, tower, path) is written once,
 * under the exclusive LWLock, when its first count arrives; counters change under the shared
 * LWLock and the entry's spinlock, so readers and a reset (exclusive) never see a torn entry.
 * What does not fit (a full table, a name longer than STATS_NAME_LEN - 1 bytes) is counted in
 * one overflow entry, shown without a model.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#if PG_VERSION_NUM >= 170000
#include "storage/dsm_registry.h"
#endif

#include "pg_imgembed.h"

#define STATS_ENTRIES 1000		/* plus the overflow entry: ~0.4 MB */
#define STATS_NAME_LEN 128
#define STATS_CODES 8			/* SQLSTATEs kept per entry; others count as "other" */
#define STATS_TOWERS 2
#define STATS_PATHS 4

static const char *const tower_names[STATS_TOWERS] = {"image", "text"};
static const char *const path_names[STATS_PATHS] = {"function", "trigger", "backfill", "worker"};

typedef struct StatsCounters
{
	int64		calls;
	int64		images;
	int64		refused;
	int64		batches;
	int64		batched_images;
	double		decode_ms;
	double		decode_max_ms;
	double		preprocess_ms;
	double		preprocess_max_ms;
	double		inference_ms;
	double		inference_max_ms;
	char		codes[STATS_CODES][6];	/* "" where unused */
	int64		code_counts[STATS_CODES];
} StatsCounters;

typedef struct StatsEntry
{
	/* key: written under the exclusive lock before nused counts the entry */
	Oid			dbid;
	int16		tower;
	int16		path;
	char		model[STATS_NAME_LEN];
	slock_t		mutex;			/* protects counters */
	StatsCounters counters;
} StatsEntry;

typedef struct StatsShared
{
	LWLock		lock;
	int			tranche;
	int			nused;			/* entries[0 .. nused-1] have keys */
	TimestampTz stats_reset;
	StatsEntry	overflow;
	StatsEntry	entries[STATS_ENTRIES];
} StatsShared;

static StatsShared *stats = NULL;

static void
stats_init(void *ptr)
{
	StatsShared *shared = (StatsShared *) ptr;

	memset(shared, 0, sizeof(StatsShared));
	shared->tranche = LWLockNewTrancheId();
	LWLockInitialize(&shared->lock, shared->tranche);
	SpinLockInit(&shared->overflow.mutex);
	shared->overflow.dbid = InvalidOid;
	shared->overflow.tower = -1;
	shared->overflow.path = -1;
	for (int i = 0; i < STATS_ENTRIES; i++)
		SpinLockInit(&shared->entries[i].mutex);
	shared->stats_reset = GetCurrentTimestamp();
}

#if PG_VERSION_NUM < 170000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(StatsShared)));
}

/* In the postmaster, at start and after every crash: backends inherit the pointer. */
static void
stats_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("pg_imgembed model_stats", sizeof(StatsShared), &found);
	if (!found)
		stats_init(stats);
	LWLockRelease(AddinShmemInitLock);
}
#endif

void
imgembed_stats_preload(void)
{
#if PG_VERSION_NUM < 170000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
#endif
}

void
imgembed_stats_attach(void)
{
#if PG_VERSION_NUM >= 170000
	bool		found;

	if (stats == NULL)
		stats = GetNamedDSMSegment("pg_imgembed model_stats", sizeof(StatsShared), stats_init, &found);
#endif
	if (stats != NULL)
		LWLockRegisterTranche(stats->tranche, "pg_imgembed_stats");
}

/* The entry of a key, made if missing (else the overflow entry). Called holding the lock shared;
 * returns with it held, shared or exclusive. */
static StatsEntry *
stats_entry(Oid dbid, const char *model, int tower, int path)
{
	size_t		len = strnlen(model, STATS_NAME_LEN);
	bool		exclusive = false;

	if (len >= STATS_NAME_LEN)
		return &stats->overflow;
	for (;;)
	{
		int			n = stats->nused;

		for (int i = 0; i < n; i++)
		{
			StatsEntry *e = &stats->entries[i];

			if (e->dbid == dbid && e->tower == tower && e->path == path && strcmp(e->model, model) == 0)
				return e;
		}
		if (exclusive)
			break;
		LWLockRelease(&stats->lock);
		LWLockAcquire(&stats->lock, LW_EXCLUSIVE);
		exclusive = true;		/* look again: another backend may have added it meanwhile */
	}
	if (stats->nused >= STATS_ENTRIES)
		return &stats->overflow;
	{
		StatsEntry *e = &stats->entries[stats->nused];

		e->dbid = dbid;
		e->tower = (int16) tower;
		e->path = (int16) path;
		memcpy(e->model, model, len + 1);
		memset(&e->counters, 0, sizeof(StatsCounters));
		stats->nused++;
		return e;
	}
}

static double
nonnegative(double value)
{
	return (value >= 0 && isfinite(value)) ? value : 0;	/* NaN fails value >= 0 */
}

typedef struct StatsDelta
{
	int64		calls;
	int64		images;
	int64		batches;
	int64		batched_images;
	double		times[6];		/* decode, preprocess, inference: total then max, in ms */
} StatsDelta;

static void
stats_add(Oid dbid, const char *model, int tower, int path, const StatsDelta *d, const char *code, int64 refused)
{
	StatsEntry *e;
	StatsCounters *c;

	LWLockAcquire(&stats->lock, LW_SHARED);
	e = stats_entry(dbid, model, tower, path);
	c = &e->counters;
	SpinLockAcquire(&e->mutex);
	if (d != NULL)
	{
		c->calls += Max(d->calls, 0);
		c->images += Max(d->images, 0);
		c->batches += Max(d->batches, 0);
		c->batched_images += Max(d->batched_images, 0);
		c->decode_ms += nonnegative(d->times[0]);
		c->decode_max_ms = Max(c->decode_max_ms, nonnegative(d->times[1]));
		c->preprocess_ms += nonnegative(d->times[2]);
		c->preprocess_max_ms = Max(c->preprocess_max_ms, nonnegative(d->times[3]));
		c->inference_ms += nonnegative(d->times[4]);
		c->inference_max_ms = Max(c->inference_max_ms, nonnegative(d->times[5]));
	}
	if (code != NULL && refused > 0)
	{
		int			slot = -1;

		c->refused += refused;
		for (int i = 0; i < STATS_CODES && slot < 0; i++)
			if (c->codes[i][0] == '\0' || strncmp(c->codes[i], code, 5) == 0)
				slot = i;
		if (slot >= 0)
		{
			memcpy(c->codes[slot], code, 5);
			c->codes[slot][5] = '\0';
			c->code_counts[slot] += refused;
		}
	}
	SpinLockRelease(&e->mutex);
	LWLockRelease(&stats->lock);
}

static bool
valid_sqlstate(const char *code)
{
	for (int i = 0; i < 5; i++)
		if (!((code[i] >= '0' && code[i] <= '9') || (code[i] >= 'A' && code[i] <= 'Z')))
			return false;
	return code[5] == '\0';
}

/*
 * Called through ctypes by the backend's Python (pg_imgembed/model_stats.py), never by SQL.
 * Returns false where nothing was counted (statistics off, arguments out of range).
 */
extern PGDLLEXPORT bool imgembed_stats_record(const char *model, int tower, int path, int64 calls, int64 images,
											  int64 batches, int64 batched_images, double decode_ms,
											  double decode_max_ms, double preprocess_ms, double preprocess_max_ms,
											  double inference_ms, double inference_max_ms);
extern PGDLLEXPORT bool imgembed_stats_refused(const char *model, int tower, int path, const char *sqlstate, int64 count);
extern PGDLLEXPORT bool imgembed_stats_enabled(void);

/* Whether this backend counts (it attached in imgembed.load_settings()). */
bool
imgembed_stats_enabled(void)
{
	return stats != NULL;
}

bool
imgembed_stats_record(const char *model, int tower, int path, int64 calls, int64 images, int64 batches,
					  int64 batched_images, double decode_ms, double decode_max_ms, double preprocess_ms,
					  double preprocess_max_ms, double inference_ms, double inference_max_ms)
{
	StatsDelta	d = {calls, images, batches, batched_images,
	{decode_ms, decode_max_ms, preprocess_ms, preprocess_max_ms, inference_ms, inference_max_ms}};

	if (stats == NULL || model == NULL || tower < 0 || tower >= STATS_TOWERS || path < 0 || path >= STATS_PATHS)
		return false;
	stats_add(MyDatabaseId, model, tower, path, &d, NULL, 0);
	return true;
}

bool
imgembed_stats_refused(const char *model, int tower, int path, const char *sqlstate, int64 count)
{
	if (stats == NULL || model == NULL || sqlstate == NULL || tower < 0 || tower >= STATS_TOWERS ||
		path < 0 || path >= STATS_PATHS || strnlen(sqlstate, 6) != 5 || !valid_sqlstate(sqlstate))
		return false;
	stats_add(MyDatabaseId, model, tower, path, NULL, sqlstate, count);
	return true;
}

/* Whether the current role may use `model` (NULL: the overflow entry, a superuser's to see). */
static bool
may_see(SPIPlanPtr usage, const char *model)
{
	Datum		arg;
	bool		isnull;
	Datum		allowed;

	if (model == NULL)
		return superuser();
	arg = CStringGetTextDatum(model);
	if (SPI_execute_plan(usage, &arg, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_imgembed: privilege check returned no row");
	allowed = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && DatumGetBool(allowed);
}

static void
stats_off_notice(void)
{
	ereport(NOTICE,
			(errmsg("pg_imgembed's model statistics are off: on PostgreSQL %d they need shared_preload_libraries",
					PG_VERSION_NUM / 10000),
			 errhint("Add pg_imgembed to shared_preload_libraries in postgresql.conf and restart the server "
					 "(PostgreSQL 17 and later need no preload).")));
}

/*
 * imgembed._model_stats(): the entries of this database whose model the current role may use
 * (and, for a superuser, the overflow entry), for the imgembed.model_stats view.
 */
PG_FUNCTION_INFO_V1(imgembed_model_stats);
Datum
imgembed_model_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	StatsEntry *copy;
	int			n = 0;
	TimestampTz reset;
	SPIPlanPtr	usage;
	Oid			argtype = TEXTOID;

	imgembed_define_settings();
	InitMaterializedSRF(fcinfo, 0);
	if (stats == NULL)
		imgembed_stats_attach();
	if (stats == NULL)
	{
		stats_off_notice();
		return (Datum) 0;
	}
	copy = palloc((STATS_ENTRIES + 1) * sizeof(StatsEntry));
	LWLockAcquire(&stats->lock, LW_SHARED);
	for (int i = 0; i <= stats->nused && i <= STATS_ENTRIES; i++)
	{
		StatsEntry *e = i < stats->nused ? &stats->entries[i] : &stats->overflow;

		if (e != &stats->overflow && e->dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&e->mutex);
		memcpy(&copy[n], e, sizeof(StatsEntry));
		SpinLockRelease(&e->mutex);
		if (copy[n].counters.calls > 0 || copy[n].counters.refused > 0)
			n++;
	}
	reset = stats->stats_reset;
	LWLockRelease(&stats->lock);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	usage = SPI_prepare("SELECT imgembed.has_model_usage($1)", 1, &argtype);
	if (usage == NULL)
		elog(ERROR, "pg_imgembed: could not prepare the privilege check");
	for (int i = 0; i < n; i++)
	{
		StatsEntry *e = &copy[i];
		StatsCounters *c = &e->counters;
		bool		overflow = e->tower < 0;
		Datum		values[17];
		bool		nulls[17] = {0};
		Datum		codes[STATS_CODES + 1];
		Datum		counts[STATS_CODES + 1];
		int			ncodes = 0;
		int64		other = c->refused;

		if (!may_see(usage, overflow ? NULL : e->model))
			continue;
		for (int k = 0; k < STATS_CODES && c->codes[k][0] != '\0'; k++)
		{
			codes[ncodes] = CStringGetTextDatum(c->codes[k]);
			counts[ncodes++] = Int64GetDatum(c->code_counts[k]);
			other -= c->code_counts[k];
		}
		if (other > 0)
		{
			codes[ncodes] = CStringGetTextDatum("other");
			counts[ncodes++] = Int64GetDatum(other);
		}
		nulls[0] = nulls[1] = nulls[2] = overflow;
		if (!overflow)
		{
			values[0] = CStringGetTextDatum(e->model);
			values[1] = CStringGetTextDatum(tower_names[e->tower]);
			values[2] = CStringGetTextDatum(path_names[e->path]);
		}
		values[3] = Int64GetDatum(c->calls);
		values[4] = Int64GetDatum(c->images);
		values[5] = Int64GetDatum(c->refused);
		values[6] = PointerGetDatum(construct_array(codes, ncodes, TEXTOID, -1, false, TYPALIGN_INT));
		values[7] = PointerGetDatum(construct_array(counts, ncodes, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[8] = Int64GetDatum(c->batches);
		values[9] = Int64GetDatum(c->batched_images);
		values[10] = Float8GetDatum(c->decode_ms);
		values[11] = Float8GetDatum(c->decode_max_ms);
		values[12] = Float8GetDatum(c->preprocess_ms);
		values[13] = Float8GetDatum(c->preprocess_max_ms);
		values[14] = Float8GetDatum(c->inference_ms);
		values[15] = Float8GetDatum(c->inference_max_ms);
		values[16] = TimestampTzGetDatum(reset);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/* imgembed.model_stats_reset(): every database's counters; a superuser's (EXECUTE is revoked
 * from PUBLIC too, and a superuser may grant it). */
PG_FUNCTION_INFO_V1(imgembed_model_stats_reset);
Datum
imgembed_model_stats_reset(PG_FUNCTION_ARGS)
{
	imgembed_define_settings();
	if (stats == NULL)
		imgembed_stats_attach();
	if (stats == NULL)
	{
		stats_off_notice();
		PG_RETURN_VOID();
	}
	LWLockAcquire(&stats->lock, LW_EXCLUSIVE);
	for (int i = 0; i <= STATS_ENTRIES; i++)
	{
		StatsEntry *e = i < STATS_ENTRIES ? &stats->entries[i] : &stats->overflow;

		SpinLockAcquire(&e->mutex);
		memset(&e->counters, 0, sizeof(StatsCounters));
		SpinLockRelease(&e->mutex);
	}
	stats->nused = 0;
	stats->stats_reset = GetCurrentTimestamp();
	LWLockRelease(&stats->lock);
	PG_RETURN_VOID();
}

/*
 * imgembed.report_worker_batch(model, images, refused_sqlstates, refused_counts, batches,
 * batched_images, decode_ms, decode_max_ms, preprocess_ms, preprocess_max_ms, inference_ms,
 * inference_max_ms): what a `pg-imgembed worker` did with one batch, counted under path worker.
 *
 * Only members of imgembed_worker may report, and only for models they may use: a worker can
 * overstate its own work, never another path's, nor a model it could not have run.
 */
PG_FUNCTION_INFO_V1(imgembed_report_worker_batch);
Datum
imgembed_report_worker_batch(PG_FUNCTION_ARGS)
{
	char	   *model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *codes_array = PG_GETARG_ARRAYTYPE_P(2);
	ArrayType  *counts_array = PG_GETARG_ARRAYTYPE_P(3);
	Oid			worker_role = get_role_oid("imgembed_worker", false);
	StatsDelta	d = {1, PG_GETARG_INT64(1), PG_GETARG_INT64(4), PG_GETARG_INT64(5), {0}};
	Datum	   *codes;
	Datum	   *counts;
	bool	   *code_nulls;
	bool	   *count_nulls;
	int			ncodes;
	int			ncounts;
	SPIPlanPtr	usage;
	Oid			argtype = TEXTOID;
	bool		allowed;

	imgembed_define_settings();
	for (int i = 0; i < 6; i++)
		d.times[i] = PG_GETARG_FLOAT8(6 + i);
	if (!has_privs_of_role(GetUserId(), worker_role))
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						errmsg("pg_imgembed: role \"%s\" may not report worker statistics: it is not a member of imgembed_worker",
							   GetUserNameFromId(GetUserId(), false)),
						errhint("GRANT imgembed_worker TO %s;", GetUserNameFromId(GetUserId(), false))));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	usage = SPI_prepare("SELECT imgembed.has_model_usage($1)", 1, &argtype);
	if (usage == NULL)
		elog(ERROR, "pg_imgembed: could not prepare the privilege check");
	allowed = may_see(usage, model);
	SPI_finish();
	if (!allowed)
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						errmsg("pg_imgembed: role \"%s\" may not report statistics of model \"%s\": it may not use it",
							   GetUserNameFromId(GetUserId(), false), model)));

	deconstruct_array(codes_array, TEXTOID, -1, false, TYPALIGN_INT, &codes, &code_nulls, &ncodes);
	deconstruct_array(counts_array, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &counts, &count_nulls, &ncounts);
	if (ncodes != ncounts)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("pg_imgembed: %d refused SQLSTATEs but %d counts", ncodes, ncounts),
						errhint("Give one count per SQLSTATE, in the same order.")));
	for (int i = 0; i < ncodes; i++)
		if (code_nulls[i] || count_nulls[i] || strlen(TextDatumGetCString(codes[i])) != 5 ||
			!valid_sqlstate(TextDatumGetCString(codes[i])) || DatumGetInt64(counts[i]) < 0)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("pg_imgembed: refused SQLSTATE %d is not five digits or capital letters with a count of 0 or more",
								   i + 1)));
	if (d.images < 0 || d.batches < 0 || d.batched_images < 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("pg_imgembed: a worker's counts cannot be negative")));
	for (int i = 0; i < 6; i++)
		if (!(d.times[i] >= 0) || !isfinite(d.times[i]))
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("pg_imgembed: a worker's times must be finite and 0 or more")));

	if (stats == NULL)
		imgembed_stats_attach();
	if (stats == NULL)
		PG_RETURN_BOOL(false);	/* statistics off: the worker's work is not lost, only uncounted */
	stats_add(MyDatabaseId, model, 0, 3, &d, NULL, 0);
	for (int i = 0; i < ncodes; i++)
		stats_add(MyDatabaseId, model, 0, 3, NULL, TextDatumGetCString(codes[i]), DatumGetInt64(counts[i]));
	PG_RETURN_BOOL(true);
}
