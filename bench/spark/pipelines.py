"""The Spark Structured Streaming peer of `sluice bench pipelines`: the same queries over the
same generated input, timed from the query's start to its end (JVM and session start-up
excluded). Prints one JSON line per run: {"scenario", "events", "seconds", "events_per_s",
"rows"}. An optional fourth argument runs the query that many times in one session, each
into its own output directory (later runs have a warm JVM).

    python3 -m venv .venv-spark && .venv-spark/bin/pip install pyspark==4.3.0   # needs Java 17
    .venv-spark/bin/python bench/spark/pipelines.py heart-rate INPUT_DIR OUT_DIR [REPEAT]

Scenarios (input: NDJSON of {"playerId", "heartbeat", "createdAt" (epoch ms)}):
- heart-rate: session windows (gap 300 s, watermark 10 s) per player with the time in each
  ACSM zone of HRmax 190 (1 Hz input: a reading covers 1 s, so zone seconds are counts),
  samples, avg/min/max: what sluice's heart_rate pipeline computes.
- tumble: 1-minute tumbling windows per player with avg, min, max and the approximate
  95th percentile (the issue's hr_1m query).

Append mode emits a window once the watermark passes it; the generator ends the input with
one far-future event so that every window is emitted, as sluice's drain does.
"""
import json
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def main():
    scenario, input_dir, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    repeat = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    spark = (SparkSession.builder.master("local[2]").appName(f"sluice-peer-{scenario}")
             .config("spark.sql.shuffle.partitions", "2").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    schema = "playerId STRING, heartbeat DOUBLE, createdAt LONG"
    events = spark.read.schema(schema).json(input_dir).count()
    for run in range(repeat):
        out = f"{out_dir}/run-{run}"
        seconds, rows = run_query(spark, scenario, schema, input_dir, out)
        print(json.dumps({"scenario": scenario, "events": events, "seconds": seconds, "events_per_s": events / seconds, "rows": rows}), flush=True)
    spark.stop()


def run_query(spark, scenario, schema, input_dir, out_dir):
    """Runs the scenario's streaming query once; returns (seconds, rows written)."""
    df = (spark.readStream.schema(schema).option("maxFilesPerTrigger", 1000).json(input_dir)
          .withColumn("ts", F.timestamp_millis("createdAt")).withWatermark("ts", "10 seconds"))
    if scenario == "heart-rate":
        f = F.col("heartbeat") / F.lit(190.0)
        q = (df.groupBy("playerId", F.session_window("ts", "300 seconds"))
             .agg(F.sum(F.when(f < 0.64, 1).otherwise(0)).alias("low_s"),
                  F.sum(F.when((f >= 0.64) & (f < 0.77), 1).otherwise(0)).alias("moderate_s"),
                  F.sum(F.when(f >= 0.77, 1).otherwise(0)).alias("high_s"),
                  F.count("*").alias("samples"), F.avg("heartbeat").alias("avg_hr"),
                  F.min("heartbeat").alias("min_hr"), F.max("heartbeat").alias("max_hr")))
    elif scenario == "tumble":
        q = (df.groupBy("playerId", F.window("ts", "1 minute"))
             .agg(F.avg("heartbeat").alias("avg_hr"), F.min("heartbeat").alias("min_hr"), F.max("heartbeat").alias("max_hr"),
                  F.count("*").alias("n"), F.percentile_approx("heartbeat", 0.95).alias("p95_hr")))
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    started = time.time()
    query = (q.writeStream.format("parquet").option("path", f"{out_dir}/table").option("checkpointLocation", f"{out_dir}/checkpoint")
             .outputMode("append").trigger(availableNow=True).start())
    query.awaitTermination()
    seconds = time.time() - started
    return seconds, spark.read.parquet(f"{out_dir}/table").count()


if __name__ == "__main__":
    main()
