/*
 * pg_imgembed's settings, defined for real so PostgreSQL enforces who may set what.
 *
 * Settings an extension never defines are placeholders: any role can SET them, and ALTER SYSTEM
 * rejects them. This module defines every imgembed.* setting and reserves the prefix:
 *
 * - paths (imgembed.runtime_dir, imgembed.model_cache) and what the server writes there
 *   (imgembed.optimized_graphs) are PGC_SUSET: only a superuser (or a role granted SET on the
 *   parameter) chooses them, at server, database, role or session level; so are where backends
 *   send images (imgembed.inference_server, a network destination) and the file of the bearer
 *   token they send there (imgembed.inference_token_file);
 * - resource limits are PGC_USERSET with a check hook: a role that is not a superuser may only
 *   lower them in its session (SET, SET LOCAL), never raise them, and may not put them into
 *   per-database or per-role defaults, connection options or a function's SET clause, so every
 *   default a session starts with was chosen by a superuser. RESET goes back to that default;
 * - the rest are ordinary per-session choices.
 *
 * The PL/Python bootstrap loads this library (through imgembed.load_settings()) before it reads
 * any setting; values a role could not have set are dropped with a WARNING at that moment.
 * Preloaded (shared_preload_libraries, for imgembed.model_stats on PostgreSQL 15 and 16), the
 * library is loaded before any session exists: the settings are then defined by the first call
 * of any of its SQL functions instead, in the same context loading it would have, so a session
 * sees the same rules either way.
 * Nothing here allocates, does I/O or touches catalogs except superuser(), which is a cached
 * syscache lookup, so a check hook cannot fail in a way that harms the backend.
 */
#include "postgres.h"

#include <unistd.h>

#include "access/htup_details.h"
#include "access/parallel.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "pg_imgembed.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static char *runtime_dir = NULL;
static char *model_cache = NULL;
static bool optimized_graphs = true;
static int	max_image_pixels = 100000000;
static int	intra_op_threads = 0;
static int	max_cached_models = 4;
static int	decode_buffer_mb = 64;
static bool force_exact_decode = false;
static int	execution_provider = 0;
static char *inference_server = NULL;
static char *inference_token_file = NULL;
static int	inference_timeout_ms = 30000;

/*
 * Set when a connection option of a role that is not a superuser tried to set a limit. Such a
 * value shadows the database's and role's defaults (PostgreSQL keeps one default per setting), so
 * when it is dropped the built-in default would be left, not the superuser's ceiling: instead,
 * imgembed.load_settings() refuses to start pg_imgembed in this session.
 */
static const char *refused_connection_option = NULL;

/*
 * True while _PG_init defines the settings. PostgreSQL then applies the values that were set
 * while they were placeholders, in whatever context first loads the library: possibly inside a
 * superuser's SECURITY DEFINER function, where superuser() answers for the function's owner,
 * not for the role that set the value. So a raised limit is then judged by the session's outer
 * role (the login role, or the one SET ROLE chose), which is who ran SET or gave the option.
 */
static bool defining_settings = false;

static const struct config_enum_entry execution_providers[] = {
	{"auto", 0, false},
	{"cpu", 1, false},
	{"cuda", 2, false},
	{NULL, 0, false}
};

/* What intra_op_threads = 0 means: half the cores, 1 to 4 (settings.default_threads()). */
static int
effective_threads(int value)
{
	long		cores = sysconf(_SC_NPROCESSORS_ONLN);

	if (value != 0)
		return value;
	cores = cores > 0 ? cores / 2 : 1;
	return cores < 1 ? 1 : (cores > 4 ? 4 : (int) cores);
}

/*
 * May the current role move a limit from `current` to `wanted` from this source?
 *
 * Sources up to per-database/per-role defaults are a superuser's: the server's own (built-in,
 * postgresql.conf, ALTER SYSTEM, command line), and pg_db_role_setting, which a role that is not
 * a superuser cannot write for these settings (refused below once the library is loaded, and by
 * PostgreSQL itself for a placeholder before). A parallel worker restores what its leader checked.
 */
static bool
limit_allowed(const char *name, int current, int wanted, GucSource source)
{
	if (source <= PGC_S_DATABASE_USER || source == PGC_S_OVERRIDE || InitializingParallelWorker)
		return true;
	if (defining_settings ? superuser_arg(GetOuterUserId()) : superuser())
		return true;
	if (source == PGC_S_CLIENT)
		refused_connection_option = name;
	if (source != PGC_S_SESSION)
	{
		/* connection options, ALTER ROLE/DATABASE ... SET, a function's SET clause */
		GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
		GUC_check_errmsg("only a superuser may set a default for %s", name);
		GUC_check_errhint("Per-database and per-role values of pg_imgembed's limits are a superuser's "
						  "ceilings; within a session any role may lower them with SET or SET LOCAL.");
		return false;
	}
	if (wanted > current)
	{
		GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
		GUC_check_errmsg("%s can only be lowered, from %d to at most that, not raised to %d",
						 name, current, wanted);
		GUC_check_errhint("Its ceiling is what a superuser set for the server, database or role; "
						  "RESET %s goes back to it.", name);
		return false;
	}
	return true;
}

static bool
check_max_image_pixels(int *newval, void **extra, GucSource source)
{
	return limit_allowed("imgembed.max_image_pixels", max_image_pixels, *newval, source);
}

static bool
check_intra_op_threads(int *newval, void **extra, GucSource source)
{
	return limit_allowed("imgembed.intra_op_threads", effective_threads(intra_op_threads),
						 effective_threads(*newval), source);
}

static bool
check_max_cached_models(int *newval, void **extra, GucSource source)
{
	return limit_allowed("imgembed.max_cached_models", max_cached_models, *newval, source);
}

static bool
check_decode_buffer_mb(int *newval, void **extra, GucSource source)
{
	return limit_allowed("imgembed.decode_buffer_mb", decode_buffer_mb, *newval, source);
}

static bool
check_inference_timeout_ms(int *newval, void **extra, GucSource source)
{
	return limit_allowed("imgembed.inference_timeout_ms", inference_timeout_ms, *newval, source);
}

void
_PG_init(void)
{
	if (process_shared_preload_libraries_in_progress)
		imgembed_stats_preload();
	else
		imgembed_define_settings();
}

void
imgembed_define_settings(void)
{
	static bool defined = false;

	if (defined)
		return;
	defined = true;
	defining_settings = true;
	DefineCustomStringVariable("imgembed.runtime_dir",
							   "Directory of the server's Python runtime (superuser only).",
							   "Empty: where make install put it.",
							   &runtime_dir, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("imgembed.model_cache",
							   "Directory of the model file cache, or off (superuser only).",
							   "Empty: pg_imgembed_models in the data directory.",
							   &model_cache, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("imgembed.optimized_graphs",
							 "Cache onnxruntime's optimized graphs beside the model file cache (superuser only).",
							 "Off: every new session optimizes its model again.",
							 &optimized_graphs, true, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("imgembed.max_image_pixels",
							"Largest image, in pixels, that is decoded (decompression-bomb guard).",
							"Any role may lower it; only a superuser may raise it.",
							&max_image_pixels, 100000000, 1, 1000000000, PGC_USERSET, 0,
							check_max_image_pixels, NULL, NULL);
	DefineCustomIntVariable("imgembed.intra_op_threads",
							"onnxruntime threads per session; 0: half the cores, 1 to 4.",
							"Any role may lower it; only a superuser may raise it.",
							&intra_op_threads, 0, 0, 64, PGC_USERSET, 0,
							check_intra_op_threads, NULL, NULL);
	DefineCustomIntVariable("imgembed.max_cached_models",
							"ONNX sessions a backend keeps; least recently used go first.",
							"Any role may lower it; only a superuser may raise it.",
							&max_cached_models, 4, 1, 100, PGC_USERSET, 0,
							check_max_cached_models, NULL, NULL);
	DefineCustomIntVariable("imgembed.decode_buffer_mb",
							"Freed image memory a backend keeps for the next decode.",
							"Any role may lower it; only a superuser may raise it.",
							&decode_buffer_mb, 64, 0, 4096, PGC_USERSET, 0,
							check_decode_buffer_mb, NULL, NULL);
	DefineCustomBoolVariable("imgembed.force_exact_decode",
							 "Ignore models' fast (JPEG DCT-scaled) decode mode.",
							 NULL, &force_exact_decode, false, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("imgembed.execution_provider",
							 "onnxruntime execution provider: auto (CUDA where it starts), cpu or cuda.",
							 NULL, &execution_provider, 0, execution_providers, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("imgembed.inference_server",
							   "Open Inference Protocol (KServe V2) server that runs the models: http:// or https:// URL (superuser only).",
							   "Empty: onnxruntime inside the backend.",
							   &inference_server, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("imgembed.inference_token_file",
							   "File holding the bearer token sent to imgembed.inference_server (superuser only).",
							   "Empty: no Authorization header.",
							   &inference_token_file, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("imgembed.inference_timeout_ms",
							"Longest wait for one answer of imgembed.inference_server, in milliseconds.",
							"Any role may lower it; only a superuser may raise it.",
							&inference_timeout_ms, 30000, 1, 3600000, PGC_USERSET, 0,
							check_inference_timeout_ms, NULL, NULL);
	MarkGUCPrefixReserved("imgembed");
	defining_settings = false;
}

PG_FUNCTION_INFO_V1(imgembed_load_settings);

/* Called by the PL/Python bootstrap: loading the library is what defines the settings. It also
 * attaches the statistics' shared memory, which may raise an error, so not from Python later. */
Datum
imgembed_load_settings(PG_FUNCTION_ARGS)
{
	imgembed_define_settings();
	imgembed_stats_attach();
	if (refused_connection_option != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("a connection option set %s, which only a superuser may give a default",
						refused_connection_option),
				 errdetail("Dropping it would leave the built-in default in place of the database's or role's."),
				 errhint("Reconnect without -c %s in the connection options (PGOPTIONS); "
						 "within a session any role may lower it with SET.", refused_connection_option)));
	PG_RETURN_VOID();
}

/*
 * Acting for someone else, safely.
 *
 * A SECURITY DEFINER function cannot see who called it, and a role's own code must never run with
 * a worker's or the extension owner's privileges. These functions are not SECURITY DEFINER: they
 * check the calling role first (GetUserId() is the caller), then run one fixed statement as the
 * role that must answer for it, the way PostgreSQL itself runs a table owner's index expressions
 * during VACUUM (SECURITY_RESTRICTED_OPERATION: no SET ROLE, no temporary objects), and switch
 * back. An error on the way aborts the (sub)transaction, which restores the caller.
 */

/* Runs `query` with the given arguments as `role`; returns the first column of its one row,
 * copied into the caller's memory (NULL: *isnull). */
static Datum
run_as(Oid role, const char *query, int nargs, Oid *argtypes, Datum *values, const char *nulls,
	   bool *isnull)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	Datum		result = (Datum) 0;
	MemoryContext caller_context = CurrentMemoryContext;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(role, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	/*
	 * The search_path a role's own session starts with, not the caller's: the caller's could
	 * point the owner's unqualified names (in its triggers, say) at objects the caller made.
	 * Everything of the extension's qualifies its names or pins its own.
	 */
	(void) set_config_option("search_path", "\"$user\", public", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(query, nargs, argtypes, values, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "pg_imgembed: \"%s\" returned no row", query);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
	if (!*isnull)
	{
		Oid			type = SPI_gettypeid(SPI_tuptable->tupdesc, 1);
		int16		typlen;
		bool		typbyval;
		MemoryContext spi_context = MemoryContextSwitchTo(caller_context);

		get_typlenbyval(type, &typlen, &typbyval);
		result = datumCopy(result, typbyval, typlen);
		MemoryContextSwitchTo(spi_context);
	}
	SPI_finish();

	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return result;
}

static Oid
table_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
						errmsg("pg_imgembed: table with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * The worker's reads and writes of a user table: imgembed._owner_read/_owner_write, run as the
 * table's owner, so whatever the owner defined on the table (triggers, rules, defaults, domains,
 * policies) runs with the owner's privileges, and a worker needs no grant on any user table.
 * Only members of imgembed_worker may ask; the functions themselves touch only tables whose owner
 * bound them for async embedding (imgembed.bindings).
 */
static Datum
worker_call(FunctionCallInfo fcinfo, const char *query)
{
	Oid			worker_role = get_role_oid("imgembed_worker", false);
	Oid			argtypes[3] = {REGCLASSOID, NAMEOID, JSONBOID};
	Datum		values[3];
	bool		isnull;
	Datum		result;

	imgembed_define_settings();
	if (!has_privs_of_role(GetUserId(), worker_role))
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						errmsg("pg_imgembed: role \"%s\" may not process embedding jobs: it is not a member of imgembed_worker",
							   GetUserNameFromId(GetUserId(), false)),
						errhint("GRANT imgembed_worker TO %s;", GetUserNameFromId(GetUserId(), false))));
	/* declared STRICT: no argument is NULL */
	for (int i = 0; i < 3; i++)
		values[i] = PG_GETARG_DATUM(i);
	result = run_as(table_owner(PG_GETARG_OID(0)), query, 3, argtypes, values, NULL, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	return result;
}

PG_FUNCTION_INFO_V1(imgembed_worker_read);
Datum
imgembed_worker_read(PG_FUNCTION_ARGS)
{
	return worker_call(fcinfo, "SELECT imgembed._owner_read($1, $2, $3)");
}

PG_FUNCTION_INFO_V1(imgembed_worker_write);
Datum
imgembed_worker_write(PG_FUNCTION_ARGS)
{
	return worker_call(fcinfo, "SELECT imgembed._owner_write($1, $2, $3)");
}

/*
 * imgembed._lock_model(model, exclusive): the lock that orders writers of embedded columns
 * (shared) and replacements of the model (exclusive), held until the transaction ends.
 *
 * A heavyweight lock on an object no SQL command names (class: imgembed.model_store, object: a
 * hash of the model's name): its queue is fair, so a stream of writers cannot starve a waiting
 * replacement, and unlike an advisory lock no role can take it by hand. Only roles that may use
 * the model (shared) or administer models (exclusive) take it, so a role without usage cannot
 * delay the model's writers or its administrator. Shared also holds the model's row FOR SHARE
 * (as the extension's owner: the lock needs UPDATE on the table), which makes a REPEATABLE READ
 * writer whose snapshot predates a replacement fail to serialize. Returns the model's generation,
 * NULL where the role may not take the lock or the model does not exist.
 */
PG_FUNCTION_INFO_V1(imgembed_lock_model);
Datum
imgembed_lock_model(PG_FUNCTION_ARGS)
{
	text	   *model = PG_GETARG_TEXT_PP(0);
	bool		exclusive = PG_GETARG_BOOL(1);
	Oid			store = get_relname_relid("model_store", get_namespace_oid("imgembed", false));
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {PointerGetDatum(model)};
	bool		isnull;
	Datum		allowed;
	Datum		generation;

	imgembed_define_settings();
	/* as the caller: may it take this lock? */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(exclusive ? "SELECT pg_catalog.has_table_privilege('imgembed.model_store', 'UPDATE')"
							  : "SELECT imgembed.has_model_usage($1)",
							  exclusive ? 0 : 1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "pg_imgembed: privilege check returned no row");
	allowed = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	SPI_finish();
	if (isnull || !DatumGetBool(allowed))
		PG_RETURN_NULL();

	LockDatabaseObject(store, (Oid) DatumGetUInt32(hash_any((unsigned char *) VARDATA_ANY(model),
																   VARSIZE_ANY_EXHDR(model))),
					   0, exclusive ? ExclusiveLock : ShareLock);
	if (exclusive)
		PG_RETURN_NULL();
	generation = run_as(table_owner(store), "SELECT m.generation FROM imgembed.model_store m WHERE m.name = $1 FOR SHARE",
						1, argtypes, values, NULL, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(generation);
}
