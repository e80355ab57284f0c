-- title: Accept-to-ack latency by sender (ms)
-- From the raw acked rows whose accept time is known. quantiles() samples
-- beyond 8192 values per group, so large groups are estimates.
SELECT sender, acks, p50_ms, p95_ms, p99_ms, avg_ms, max_ms
FROM (
    SELECT if(vapid_sub = '', '(none)', vapid_sub) AS sender, count() AS acks,
        quantiles(0.5, 0.95, 0.99)(latency_ms) AS q,
        round(q[1], 1) AS p50_ms, round(q[2], 1) AS p95_ms, round(q[3], 1) AS p99_ms,
        round(avg(latency_ms), 1) AS avg_ms, max(latency_ms) AS max_ms
    FROM {db}.acked
    WHERE date >= toDate({since_date}) AND date <= toDate({until_date})
        AND time >= toDateTime({since}) AND time < toDateTime({until}) AND accepted_ms > 0 {sender_filter}
    GROUP BY vapid_sub
    UNION ALL
    SELECT '(all)' AS sender, count() AS acks,
        quantiles(0.5, 0.95, 0.99)(latency_ms) AS q,
        round(q[1], 1) AS p50_ms, round(q[2], 1) AS p95_ms, round(q[3], 1) AS p99_ms,
        round(avg(latency_ms), 1) AS avg_ms, max(latency_ms) AS max_ms
    FROM {db}.acked
    WHERE date >= toDate({since_date}) AND date <= toDate({until_date})
        AND time >= toDateTime({since}) AND time < toDateTime({until}) AND accepted_ms > 0 {sender_filter}
)
WHERE acks > 0
ORDER BY sender = '(all)' DESC, acks DESC, sender
LIMIT {limit};
