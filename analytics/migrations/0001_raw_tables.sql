-- Raw event tables: one row per pushlog event, written by the analytics
-- projector. Written for Debian's ClickHouse 18.16 and current ClickHouse:
-- MergeTree family only, DateTime plus an integer millisecond column (no
-- DateTime64), no TTL clause (old days are dropped by partition), no
-- LowCardinality.
--
-- Every raw table starts with the same columns:
--   date            UTC day of the event (the partition key: drop or rebuild a day)
--   time, time_ms   when the fact happened (seconds; exact milliseconds)
--   event_id        hex of the event's 16-byte id
--   uaid            the user agent (the Kafka key)
--   kafka_partition, kafka_offset   where the event is in its topic
-- Rows are ordered by (kafka_partition, kafka_offset), so the projector's
-- "largest stored offset" look-ups read the primary index, not the table.
-- {db} is replaced by the (validated) database name.

CREATE TABLE IF NOT EXISTS {db}.accepted (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    channel_id String,
    vapid_sub String,
    vapid_key_hash String,
    key_bound UInt8,
    payload_bytes UInt32,
    encoding String,
    ttl_s Int64,
    urgency String,
    has_topic UInt8
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

-- The tables below describe an accepted message by its reference (msg_*),
-- with the sender copied from the MessageAccepted. latency_ms is
-- time_ms - accepted_ms (0 when accepted_ms is unknown).

CREATE TABLE IF NOT EXISTS {db}.deleted (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    channel_id String,
    msg_partition Int32,
    msg_offset Int64,
    accepted_ms Int64,
    vapid_sub String,
    latency_ms Int64
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS {db}.delivered (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    channel_id String,
    msg_partition Int32,
    msg_offset Int64,
    accepted_ms Int64,
    vapid_sub String,
    latency_ms Int64,
    node String,
    conn_id String,
    attempt Int32
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS {db}.acked (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    channel_id String,
    msg_partition Int32,
    msg_offset Int64,
    accepted_ms Int64,
    vapid_sub String,
    latency_ms Int64,
    code Int32
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS {db}.nacked (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    channel_id String,
    msg_partition Int32,
    msg_offset Int64,
    accepted_ms Int64,
    vapid_sub String,
    latency_ms Int64,
    code Int32
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS {db}.expired (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    channel_id String,
    msg_partition Int32,
    msg_offset Int64,
    accepted_ms Int64,
    vapid_sub String,
    latency_ms Int64
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

CREATE TABLE IF NOT EXISTS {db}.dropped (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    channel_id String,
    msg_partition Int32,
    msg_offset Int64,
    accepted_ms Int64,
    vapid_sub String,
    latency_ms Int64,
    reason String,
    reason_code Int32
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

-- action: registered | unregistered | reset
CREATE TABLE IF NOT EXISTS {db}.registrations (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    action String,
    channel_id String,
    key_hash String,
    code Int32,
    reason String
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

-- action: connected | disconnected (duration_ms set on disconnected)
CREATE TABLE IF NOT EXISTS {db}.connections (
    date Date,
    time DateTime,
    time_ms Int64,
    event_id String,
    uaid String,
    kafka_partition Int32,
    kafka_offset Int64,
    action String,
    node String,
    conn_id String,
    link_addr String,
    since_ms Int64,
    user_agent String,
    duration_ms Int64
) ENGINE = MergeTree() PARTITION BY date ORDER BY (kafka_partition, kafka_offset);

-- The projector's own progress: after every row of a batch is stored it
-- records, per topic partition, the offset of the last record it has fully
-- projected. The projector resumes after it, so ClickHouse (not a consumer
-- group) decides where a projection continues. ReplacingMergeTree keeps the
-- highest offset per partition after merges; readers take max(offset).
CREATE TABLE IF NOT EXISTS {db}.kafka_progress (
    topic String,
    partition Int32,
    offset Int64,
    time DateTime
) ENGINE = ReplacingMergeTree(offset) ORDER BY (topic, partition);
