/* What the settings module (pg_imgembed.c) and the statistics (model_stats.c) share. */
#ifndef PG_IMGEMBED_H
#define PG_IMGEMBED_H

/* Defines the imgembed.* settings once per process; every SQL-callable entry point calls it. */
extern void imgembed_define_settings(void);

/* Shared memory of imgembed.model_stats: requested at preload (PostgreSQL 15, 16), attached once
 * per backend by imgembed.load_settings() (PostgreSQL 17: the DSM registry). */
extern void imgembed_stats_preload(void);
extern void imgembed_stats_attach(void);

#endif
