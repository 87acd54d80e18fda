"""A real Flight SQL consumer: ADBC (with pandas and polars on top) against an insitu
provider, authenticated with the token `insitu token --agreement …` prints.

Usage: flight_sql.py ENDPOINT TOKEN TABLE
Prints one JSON object with what each client saw, for the Rust test to check.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import polars as pl
import pyarrow.flight as flight
from adbc_driver_flightsql import DatabaseOptions

endpoint, token, table = sys.argv[1], sys.argv[2], sys.argv[3]
uri = endpoint.replace("http://", "grpc://", 1)

conn = flightsql.connect(
    uri,
    db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
)
report = {}

# Metadata: every catalog, schema, table and column the driver can see.
objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
seen = []
for catalog in objects:
    for schema in catalog["catalog_db_schemas"] or []:
        for t in schema["db_schema_tables"] or []:
            seen.append(
                {
                    "catalog": catalog["catalog_name"],
                    "schema": schema["db_schema_name"],
                    "table": t["table_name"],
                    "type": t["table_type"],
                    "columns": [c["column_name"] for c in t["table_columns"] or []],
                }
            )
report["objects"] = seen
schema = conn.adbc_get_table_schema(table)
report["table_schema"] = [[f.name, str(f.type)] for f in schema]

with conn.cursor() as cur:
    cur.execute(f"SELECT count(*) AS n, sum(id) AS total FROM {table}")
    arrow_table = cur.fetch_arrow_table()
    report["count"] = arrow_table.column("n")[0].as_py()
    report["sum"] = arrow_table.column("total")[0].as_py()
    report["result_schema"] = [[f.name, str(f.type)] for f in arrow_table.schema]

    # A prepared statement with bound parameters (qmark style, as DB-API sends them).
    cur.execute(
        f"SELECT id, name FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id",
        parameters=(100, 104),
    )
    rows = cur.fetchall()
    report["prepared"] = [[r[0], r[1]] for r in rows]
    # The same statement again with other values reuses the prepared statement.
    cur.execute(
        f"SELECT id, name FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id",
        parameters=(7, 8),
    )
    report["prepared_again"] = [[r[0], r[1]] for r in cur.fetchall()]

    frame_sql = f"SELECT id, name, amount FROM {table} WHERE id < 1000 ORDER BY id"
    cur.execute(frame_sql)
    pdf = cur.fetch_df()

pldf = pl.read_database(frame_sql, connection=conn)
report["pandas_shape"] = list(pdf.shape)
report["polars_shape"] = list(pldf.shape)
report["pandas_amount_sum"] = float(pdf["amount"].sum())
report["polars_amount_sum"] = float(pldf["amount"].sum())
report["frames_equal"] = bool(pldf.to_pandas().equals(pdf))
conn.close()


def statement(sql):
    """google.protobuf.Any{CommandStatementQuery{query}}, encoded by hand."""

    def field(number, payload):
        n, out = len(payload), bytes([number << 3 | 2])
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out + payload

    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return field(1, type_url) + field(2, field(1, sql.encode()))


# Plain pyarrow.flight: the same query as a Flight SQL command, without ADBC.
client = flight.FlightClient(endpoint.replace("http://", "grpc+tcp://", 1))
options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
descriptor = flight.FlightDescriptor.for_command(statement(f"SELECT count(*) AS n FROM {table}"))
info = client.get_flight_info(descriptor, options)
result = client.do_get(info.endpoints[0].ticket, options).read_all()
report["pyarrow_count"] = result.column("n")[0].as_py()
print(json.dumps(report))
