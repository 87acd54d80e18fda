"""Spark 4 (local) reads a gated table through clients/python/insitu_spark.py and
aggregates it. Usage: spark_aggregate.py ENDPOINT TOKEN TABLE. Prints JSON."""

import json
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from insitu_spark import InsituDataSource

endpoint, token, table = sys.argv[1], sys.argv[2], sys.argv[3]
spark = (
    SparkSession.builder.master("local[2]")
    .appName("insitu-test")
    .config("spark.ui.enabled", "false")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.sql.shuffle.partitions", "2")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
spark.dataSource.register(InsituDataSource)
df = (
    spark.read.format("insitu")
    .option("endpoint", endpoint)
    .option("token", token)
    .option("table", table)
    .load()
)
rows = (
    df.groupBy((F.col("id") % 10).alias("bucket"))
    .agg(F.count("*").alias("n"), F.sum("amount").alias("total"))
    .orderBy("bucket")
    .collect()
)
print(
    json.dumps(
        {
            "columns": df.columns,
            "groups": [[r["bucket"], r["n"], r["total"]] for r in rows],
        }
    )
)
spark.stop()
