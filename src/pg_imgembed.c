/*
 * pg_imgembed's settings, defined for real so PostgreSQL enforces who may set what.
 *
 * Settings an extension never defines are placeholders: any role can SET them, and ALTER SYSTEM
 * rejects them. This module defines every imgembed.* setting and reserves the prefix:
 *
 * - paths (imgembed.runtime_dir, imgembed.model_cache) and what the server writes there
 *   (imgembed.optimized_graphs) are PGC_SUSET: only a superuser (or a role granted SET on the
 *   parameter) chooses them, at server, database, role or session level;
 * - resource limits are PGC_USERSET with a check hook: a role that is not a superuser may only
 *   lower them in its session (SET, SET LOCAL), never raise them, and may not put them into
 *   per-database or per-role defaults, connection options or a function's SET clause, so every
 *   default a session starts with was chosen by a superuser. RESET goes back to that default;
 * - the rest are ordinary per-session choices.
 *
 * The PL/Python bootstrap loads this library (through imgembed.load_settings()) before it reads
 * any setting; values a role could not have set are dropped with a WARNING at that moment.
 * Nothing here allocates, does I/O or touches catalogs except superuser(), which is a cached
 * syscache lookup, so a check hook cannot fail in a way that harms the backend.
 */
#include "postgres.h"

#include <unistd.h>

#include "access/parallel.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

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

/*
 * Set when a connection option of a role that is not a superuser tried to set a limit. Such a
 * value shadows the database's and role's defaults (PostgreSQL keeps one default per setting), so
 * when it is dropped the built-in default would be left, not the superuser's ceiling: instead,
 * imgembed.load_settings() refuses to start pg_imgembed in this session.
 */
static const char *refused_connection_option = NULL;

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
	if (source <= PGC_S_DATABASE_USER || source == PGC_S_OVERRIDE || InitializingParallelWorker ||
		superuser())
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

void
_PG_init(void)
{
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
	MarkGUCPrefixReserved("imgembed");
}

PG_FUNCTION_INFO_V1(imgembed_load_settings);

/* Called by the PL/Python bootstrap: loading the library is what defines the settings. */
Datum
imgembed_load_settings(PG_FUNCTION_ARGS)
{
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
