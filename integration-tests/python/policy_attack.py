"""One attack on a provider's query policy, through ADBC (what BI tools and notebooks
use), as a real consumer process would send it.

Usage: policy_attack.py ENDPOINT TOKEN SQL [PARAMS_JSON]
With PARAMS_JSON (a JSON list), the SQL runs as a prepared statement with those values
bound. Prints one JSON object: {"error": message} if the provider refused, otherwise
{"rows": n, "columns": [...], "values": [[...], ...]}.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions

endpoint, token, sql = sys.argv[1], sys.argv[2], sys.argv[3]
params = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
uri = endpoint.replace("http://", "grpc://", 1)

conn = flightsql.connect(
    uri,
    db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
)
try:
    with conn.cursor() as cur:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, parameters=tuple(params))
        table = cur.fetch_arrow_table()
    out = {
        "rows": table.num_rows,
        "columns": table.column_names,
        "values": [list(r.values()) for r in table.to_pylist()],
    }
except Exception as e:  # the refusal, as the driver reports it
    out = {"error": str(e)}
finally:
    conn.close()
print(json.dumps(out, default=str))
