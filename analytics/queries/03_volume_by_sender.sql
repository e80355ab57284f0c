-- title: Volume by sender
-- From the per-minute rollup: accepted messages and payload bytes, the
-- busiest minute and how many minutes the sender was active.
SELECT sender, messages, bytes, avg_bytes, peak_per_minute, active_minutes
FROM (
    SELECT if(vapid_sub = '', '(none)', vapid_sub) AS sender,
        sum(n) AS messages, sum(n_bytes) AS bytes,
        if(messages = 0, 0, round(bytes / messages, 1)) AS avg_bytes,
        max(n) AS peak_per_minute, countIf(n > 0) AS active_minutes
    FROM (
        SELECT vapid_sub, minute, sum(accepted) AS n, sum(accepted_bytes) AS n_bytes
        FROM {db}.sender_minute
        WHERE date >= toDate({since_date}) AND date <= toDate({until_date})
            AND minute >= toStartOfMinute(toDateTime({since})) AND minute < toDateTime({until}) {sender_filter}
        GROUP BY vapid_sub, minute
    )
    GROUP BY vapid_sub
)
WHERE messages > 0
ORDER BY messages DESC, sender
LIMIT {limit};
