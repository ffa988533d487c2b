"""The only code that sees PostgreSQL's backend: the SQL functions' entry points (server), plpy and
its query class, backend state read through ctypes, triggers and backfill as DDL and procedure.
"""
