-- Per-minute rollup by sender (VAPID sub, '' when none), fed by one
-- materialized view per raw table. SummingMergeTree adds rows with the same
-- (minute, vapid_sub) when parts merge, so readers still sum().
-- ClickHouse 18.16 requires a view writing TO a table to produce every
-- column of it, so each view lists them all.

CREATE TABLE IF NOT EXISTS {db}.sender_minute (
    date Date,
    minute DateTime,
    vapid_sub String,
    accepted UInt64,
    accepted_bytes UInt64,
    delivered UInt64,
    redelivered UInt64,
    acked UInt64,
    ack_latency_count UInt64,
    ack_latency_ms_sum Int64,
    nacked UInt64,
    expired UInt64,
    dropped UInt64,
    deleted UInt64
) ENGINE = SummingMergeTree() PARTITION BY date ORDER BY (minute, vapid_sub);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sender_minute_accepted TO {db}.sender_minute AS
SELECT date, toStartOfMinute(time) AS minute, vapid_sub,
    toUInt64(count()) AS accepted, toUInt64(sum(payload_bytes)) AS accepted_bytes,
    toUInt64(0) AS delivered, toUInt64(0) AS redelivered,
    toUInt64(0) AS acked, toUInt64(0) AS ack_latency_count, toInt64(0) AS ack_latency_ms_sum,
    toUInt64(0) AS nacked, toUInt64(0) AS expired, toUInt64(0) AS dropped, toUInt64(0) AS deleted
FROM {db}.accepted GROUP BY date, minute, vapid_sub;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sender_minute_delivered TO {db}.sender_minute AS
SELECT date, toStartOfMinute(time) AS minute, vapid_sub,
    toUInt64(0) AS accepted, toUInt64(0) AS accepted_bytes,
    toUInt64(count()) AS delivered, toUInt64(countIf(attempt > 1)) AS redelivered,
    toUInt64(0) AS acked, toUInt64(0) AS ack_latency_count, toInt64(0) AS ack_latency_ms_sum,
    toUInt64(0) AS nacked, toUInt64(0) AS expired, toUInt64(0) AS dropped, toUInt64(0) AS deleted
FROM {db}.delivered GROUP BY date, minute, vapid_sub;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sender_minute_acked TO {db}.sender_minute AS
SELECT date, toStartOfMinute(time) AS minute, vapid_sub,
    toUInt64(0) AS accepted, toUInt64(0) AS accepted_bytes,
    toUInt64(0) AS delivered, toUInt64(0) AS redelivered,
    toUInt64(count()) AS acked, toUInt64(countIf(accepted_ms > 0)) AS ack_latency_count,
    toInt64(sumIf(latency_ms, accepted_ms > 0)) AS ack_latency_ms_sum,
    toUInt64(0) AS nacked, toUInt64(0) AS expired, toUInt64(0) AS dropped, toUInt64(0) AS deleted
FROM {db}.acked GROUP BY date, minute, vapid_sub;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sender_minute_nacked TO {db}.sender_minute AS
SELECT date, toStartOfMinute(time) AS minute, vapid_sub,
    toUInt64(0) AS accepted, toUInt64(0) AS accepted_bytes,
    toUInt64(0) AS delivered, toUInt64(0) AS redelivered,
    toUInt64(0) AS acked, toUInt64(0) AS ack_latency_count, toInt64(0) AS ack_latency_ms_sum,
    toUInt64(count()) AS nacked, toUInt64(0) AS expired, toUInt64(0) AS dropped, toUInt64(0) AS deleted
FROM {db}.nacked GROUP BY date, minute, vapid_sub;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sender_minute_expired TO {db}.sender_minute AS
SELECT date, toStartOfMinute(time) AS minute, vapid_sub,
    toUInt64(0) AS accepted, toUInt64(0) AS accepted_bytes,
    toUInt64(0) AS delivered, toUInt64(0) AS redelivered,
    toUInt64(0) AS acked, toUInt64(0) AS ack_latency_count, toInt64(0) AS ack_latency_ms_sum,
    toUInt64(0) AS nacked, toUInt64(count()) AS expired, toUInt64(0) AS dropped, toUInt64(0) AS deleted
FROM {db}.expired GROUP BY date, minute, vapid_sub;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sender_minute_dropped TO {db}.sender_minute AS
SELECT date, toStartOfMinute(time) AS minute, vapid_sub,
    toUInt64(0) AS accepted, toUInt64(0) AS accepted_bytes,
    toUInt64(0) AS delivered, toUInt64(0) AS redelivered,
    toUInt64(0) AS acked, toUInt64(0) AS ack_latency_count, toInt64(0) AS ack_latency_ms_sum,
    toUInt64(0) AS nacked, toUInt64(0) AS expired, toUInt64(count()) AS dropped, toUInt64(0) AS deleted
FROM {db}.dropped GROUP BY date, minute, vapid_sub;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sender_minute_deleted TO {db}.sender_minute AS
SELECT date, toStartOfMinute(time) AS minute, vapid_sub,
    toUInt64(0) AS accepted, toUInt64(0) AS accepted_bytes,
    toUInt64(0) AS delivered, toUInt64(0) AS redelivered,
    toUInt64(0) AS acked, toUInt64(0) AS ack_latency_count, toInt64(0) AS ack_latency_ms_sum,
    toUInt64(0) AS nacked, toUInt64(0) AS expired, toUInt64(0) AS dropped, toUInt64(count()) AS deleted
FROM {db}.deleted GROUP BY date, minute, vapid_sub;
