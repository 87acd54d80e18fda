"""The client side of benches/tpch.rs: runs the TPC-H queries through ADBC against the
gated provider and in DuckDB on the same Parquet files, and times first rows.

Usage: tpch_bench.py ENDPOINT TOKEN UNGATED_ENDPOINT PARQUET_DIR RUNS QUERY_DIR
Prints JSON."""

import json
import os
import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
from adbc_driver_flightsql import DatabaseOptions

endpoint, token, ungated, data_dir, runs, query_dir = sys.argv[1:7]
runs = int(runs)
tables = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]
queries = {
    f"q{q:02}": open(os.path.join(query_dir, f"q{q:02}.sql")).read() for q in range(1, 23)
}


def connect(uri, token=None):
    kwargs = {}
    if token:
        kwargs[DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    return flightsql.connect(uri.replace("http://", "grpc://", 1), db_kwargs=kwargs)


def timed(run):
    run()  # warm-up
    times, rows = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "rows": rows}


report = {"insitu": {}, "duckdb": {}}
conn = connect(endpoint, token)
cur = conn.cursor()


def insitu(sql):
    def run():
        cur.execute(sql)
        return cur.fetch_arrow_table().num_rows

    return run


for name, sql in queries.items():
    report["insitu"][name] = timed(insitu(sql))

duck = duckdb.connect()
for t in tables:
    duck.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data_dir}/{t}.parquet')")
for name, sql in queries.items():
    report["duckdb"][name] = timed(lambda sql=sql: duck.sql(sql).to_arrow_table().num_rows)


def first_row(c):
    samples = []
    for _ in range(60):
        start = time.perf_counter()
        c.execute("SELECT 1 AS one")
        c.fetch_record_batch().read_next_batch()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples[10:])


ungated_conn = connect(ungated)
ungated_cur = ungated_conn.cursor()
report["ttfr"] = {
    "gated_ms": first_row(cur),
    "ungated_ms": first_row(ungated_cur),
    "calls": 50,
}
for c in (cur, ungated_cur, conn, ungated_conn):
    c.close()
print(json.dumps(report))
