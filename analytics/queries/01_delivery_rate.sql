-- title: Delivery rate by sender
-- From the per-minute rollup. delivered counts first deliveries,
-- redelivered the further attempts; acked_pct is acked / accepted within
-- the window. The (all) row sums every sender.
SELECT sender, accepted, delivered, redelivered, acked, nacked, expired, dropped, deleted,
    if(accepted = 0, 0, round(100 * acked / accepted, 1)) AS acked_pct
FROM (
    SELECT sender, n_accepted AS accepted, n_delivered - n_redelivered AS delivered,
        n_redelivered AS redelivered, n_acked AS acked, n_nacked AS nacked,
        n_expired AS expired, n_dropped AS dropped, n_deleted AS deleted
    FROM (
        SELECT if(vapid_sub = '', '(none)', vapid_sub) AS sender,
            sum(accepted) AS n_accepted, sum(delivered) AS n_delivered, sum(redelivered) AS n_redelivered,
            sum(acked) AS n_acked, sum(nacked) AS n_nacked, sum(expired) AS n_expired,
            sum(dropped) AS n_dropped, sum(deleted) AS n_deleted
        FROM {db}.sender_minute
        WHERE date >= toDate({since_date}) AND date <= toDate({until_date})
            AND minute >= toStartOfMinute(toDateTime({since})) AND minute < toDateTime({until}) {sender_filter}
        GROUP BY vapid_sub
        UNION ALL
        SELECT '(all)' AS sender,
            sum(accepted) AS n_accepted, sum(delivered) AS n_delivered, sum(redelivered) AS n_redelivered,
            sum(acked) AS n_acked, sum(nacked) AS n_nacked, sum(expired) AS n_expired,
            sum(dropped) AS n_dropped, sum(deleted) AS n_deleted
        FROM {db}.sender_minute
        WHERE date >= toDate({since_date}) AND date <= toDate({until_date})
            AND minute >= toStartOfMinute(toDateTime({since})) AND minute < toDateTime({until}) {sender_filter}
    )
)
ORDER BY sender = '(all)' DESC, accepted DESC, sender
LIMIT {limit};
