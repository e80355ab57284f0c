-- title: Connections by node
-- connects and disconnects seen in the window; durations are those of the
-- connections that ended in it.
SELECT node_label AS node, connects, disconnects, uaids, avg_duration_s, p95_duration_s
FROM (
    SELECT if(node = '', '(none)', node) AS node_label,
        countIf(action = 'connected') AS connects,
        countIf(action = 'disconnected') AS disconnects,
        uniqExact(uaid) AS uaids,
        if(disconnects = 0, 0, round(avgIf(duration_ms, action = 'disconnected') / 1000, 1)) AS avg_duration_s,
        if(disconnects = 0, 0, round(quantileIf(0.95)(duration_ms, action = 'disconnected') / 1000, 1)) AS p95_duration_s
    FROM {db}.connections
    WHERE date >= toDate({since_date}) AND date <= toDate({until_date})
        AND time >= toDateTime({since}) AND time < toDateTime({until}) {node_filter}
    GROUP BY node
)
ORDER BY connects DESC, node
LIMIT {limit};
