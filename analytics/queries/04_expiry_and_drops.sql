-- title: Expiries and drops by sender and reason
-- age_ms is how long after acceptance the message expired or was dropped.
SELECT sender, outcome, reason, messages, avg_age_ms
FROM (
    SELECT if(vapid_sub = '', '(none)', vapid_sub) AS sender, 'expired' AS outcome, '-' AS reason,
        count() AS messages, round(avgIf(latency_ms, accepted_ms > 0), 1) AS avg_age_ms
    FROM {db}.expired
    WHERE date >= toDate({since_date}) AND date <= toDate({until_date})
        AND time >= toDateTime({since}) AND time < toDateTime({until}) {sender_filter}
    GROUP BY vapid_sub
    UNION ALL
    SELECT if(vapid_sub = '', '(none)', vapid_sub) AS sender, 'dropped' AS outcome,
        if(reason = '', 'unspecified', reason) AS reason_label,
        count() AS messages, round(avgIf(latency_ms, accepted_ms > 0), 1) AS avg_age_ms
    FROM {db}.dropped
    WHERE date >= toDate({since_date}) AND date <= toDate({until_date})
        AND time >= toDateTime({since}) AND time < toDateTime({until}) {sender_filter}
    GROUP BY vapid_sub, reason
)
ORDER BY messages DESC, sender, outcome, reason
LIMIT {limit};
