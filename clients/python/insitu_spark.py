"""A Spark 4 data source for insitu: read a gated table, or the result of a query, from
an insitu provider's Flight SQL endpoint.

    spark.dataSource.register(InsituDataSource)
    df = (spark.read.format("insitu")
          .option("endpoint", "grpc://provider:50051")
          .option("token", token)            # from `insitu token --agreement <id>`
          .option("table", "sales")          # or .option("query", "SELECT ...")
          .load())

The query runs on the provider; Spark receives only its result. The driver plans the
query once (ADBC `execute_partitions`) and every endpoint the provider returns becomes a
Spark partition, fetched in parallel by the executors straight from the provider.
"""

from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.pandas.types import from_arrow_schema


def _connect(options):
    import adbc_driver_flightsql.dbapi as flightsql
    from adbc_driver_flightsql import DatabaseOptions

    endpoint = options.get("endpoint")
    token = options.get("token")
    if not endpoint or not token:
        raise ValueError("the insitu data source needs the 'endpoint' and 'token' options")
    return flightsql.connect(
        endpoint.replace("http://", "grpc://", 1),
        db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
    )


def _query(options):
    query, table = options.get("query"), options.get("table")
    if bool(query) == bool(table):
        raise ValueError("give exactly one of the 'query' and 'table' options")
    if table:
        quoted = table.replace('"', '""')
        return f'SELECT * FROM "{quoted}"'
    return query


def _plan(options):
    """Plans the query on the provider: its partitions (opaque endpoint descriptors)
    and its Arrow schema."""
    conn = _connect(options)
    try:
        cur = conn.cursor()
        partitions, schema = cur.adbc_execute_partitions(_query(options))
        cur.close()
        return partitions, schema
    finally:
        conn.close()


class InsituPartition(InputPartition):
    def __init__(self, descriptor):
        super().__init__(descriptor)
        self.descriptor = descriptor


class InsituDataSource(DataSource):
    @classmethod
    def name(cls):
        return "insitu"

    def schema(self):
        _, schema = _plan(self.options)
        return from_arrow_schema(schema)

    def reader(self, schema):
        return InsituReader(self.options)


class InsituReader(DataSourceReader):
    def __init__(self, options):
        self.options = dict(options)

    def partitions(self):
        partitions, _ = _plan(self.options)
        return [InsituPartition(bytes(p)) for p in partitions]

    def read(self, partition):
        conn = _connect(self.options)
        try:
            cur = conn.cursor()
            cur.adbc_read_partition(partition.descriptor)
            for batch in cur.fetch_record_batch():
                yield batch
            cur.close()
        finally:
            conn.close()
