"""Downloads an insitu asset with plain pyarrow.flight, as a consumer's notebook would.

usage: download.py ENDPOINT TOKEN DID AGREEMENT (bearer|basic)

bearer: send the token as `authorization: Bearer …` on every call.
basic:  trade it for a bearer token in the Flight handshake (Basic auth, token as the
        password), the way BI tools that only know user/password connect.
Prints a JSON summary on stdout.
"""
import json
import sys

import pyarrow.flight as flight


def main() -> None:
    endpoint, token, did, agreement, mode = sys.argv[1:6]
    client = flight.FlightClient(endpoint.replace("http://", "grpc+tcp://"))
    if mode == "basic":
        header = client.authenticate_basic_token(b"insitu", token.encode())
        options = flight.FlightCallOptions(headers=[header])
    else:
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
    descriptor = flight.FlightDescriptor.for_path(did, agreement)
    info = client.get_flight_info(descriptor, options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    print(json.dumps({
        "rows": table.num_rows,
        "columns": table.column_names,
        "id_sum": int(sum(table.column("id").to_pylist())),
        "total_records": info.total_records,
    }))


if __name__ == "__main__":
    main()
