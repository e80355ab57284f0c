-- A deleted message counts once, under its sender (issue 16).
--
-- Until now sender_minute.deleted counted rows of the raw deleted table:
-- one per DELETE request (a sender's retry counted twice), with no sender
-- (ingest cannot know it: the message id names the message, not who sent
-- it). The owner settles a deleted message exactly once, with a Dropped
-- event of reason 'deleted' that carries the sender copied from the
-- MessageAccepted, and the projector writes it exactly once: deleted now
-- counts those. dropped keeps counting every drop, deletions included
-- (accepted = acked + expired + dropped + pending still adds up), so
-- deleted is the part of dropped the senders asked for.
--
-- The raw deleted table still records each DELETE request as it came.
--
-- The new view is created before the old one is dropped, so a deletion
-- projected meanwhile is never missed. Rollup rows written before this
-- migration keep the old numbers until `pushlog analytics rebuild`.

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sender_minute_deleted_once TO {db}.sender_minute AS
SELECT date, toStartOfMinute(time) AS minute, vapid_sub,
    toUInt64(0) AS accepted, toUInt64(0) AS accepted_bytes,
    toUInt64(0) AS delivered, toUInt64(0) AS redelivered,
    toUInt64(0) AS acked, toUInt64(0) AS ack_latency_count, toInt64(0) AS ack_latency_ms_sum,
    toUInt64(0) AS nacked, toUInt64(0) AS expired, toUInt64(0) AS dropped, toUInt64(count()) AS deleted
FROM {db}.dropped WHERE reason = 'deleted' GROUP BY date, minute, vapid_sub;

DROP TABLE IF EXISTS {db}.sender_minute_deleted;
