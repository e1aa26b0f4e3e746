"""Reads sluice's lake with Apache Spark, without sluice: a manual check, kept out of CI
because pyspark is large (it needs Java 17). With the `delta-spark` package, Spark reads
the tables as Delta (`spark.read.format("delta")`); without it (as here, where Maven is out
of reach), it reads exactly the Parquet files the Delta log names, listed by the
`deltalake` package, with `date` from the Hive-style folders.

    python3 -m venv /tmp/spark && /tmp/spark/bin/pip install pyspark==4.3.0 deltalake
    cargo run --release -- demo --exit
    /tmp/spark/bin/python scripts/spark-read-lake.py sluice-data/lake
"""
import sys

from pyspark.sql import SparkSession

lake = sys.argv[1] if len(sys.argv) > 1 else "sluice-data/lake"
spark = (SparkSession.builder.master("local[2]").config("spark.sql.shuffle.partitions", "2")
         .config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
from deltalake import DeltaTable


def read(table):
    files = DeltaTable(f"{lake}/{table}").file_uris()
    return spark.read.option("basePath", f"{lake}/{table}").parquet(*files)


raw = read("heartbeat_raw")
sessions = read("heart_rate")
raw.printSchema()
sessions.printSchema()
print("raw rows", raw.count(), "sessions", sessions.count())
(sessions.selectExpr("player_id", "session_start", "round(low_s/60, 2) AS low_min", "round(moderate_s/60, 2) AS mod_min",
                     "round(high_s/60, 2) AS high_min", "samples", "date")
 .orderBy("player_id", "session_start").show(truncate=False))
spark.stop()
