-- Per player and minute: average, range, count and 95th percentile of the heart rate.
-- sluice pipelines create --file examples/pipelines/hr_1m.sql
CREATE PIPELINE hr_1m AS
SELECT "playerId", window_start, window_end,
       avg(heartbeat) AS avg_hr, min(heartbeat) AS min_hr, max(heartbeat) AS max_hr,
       count(*) AS n, approx_percentile_cont(heartbeat, 0.95) AS p95_hr
FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL '1' MINUTE)
GROUP BY "playerId", window_start, window_end;
