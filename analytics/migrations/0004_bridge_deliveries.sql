-- Deliveries through mobile bridges (issue 14), with the urgency the
-- sender asked for beside the outcome, so a sender can see what urgency
-- cost: how often, after how many attempts (429/5xx retries) and how late
-- a high- or low-urgency message reached FCM or APNs.
--
-- The owner writes a bridge's acceptance as a Delivered event whose
-- conn_id is "bridge:<router type>/<app id>" (then settles it at once
-- with an Acked code 100: FCM and APNs give no end-to-end ack); the
-- urgency is the MessageAccepted's, joined by the message reference. A
-- message a bridge refused for good is a dropped row with reason
-- 'bridge_refused'; one whose TTL ended while the bridge was down or
-- throttling is an expired row. A view: nothing to backfill, and
-- ClickHouse 18.16 has no ALTER ... ADD COLUMN IF NOT EXISTS to keep a
-- column migration idempotent.

CREATE VIEW IF NOT EXISTS {db}.bridge_deliveries AS
SELECT date, time, uaid, channel_id, msg_partition, msg_offset, vapid_sub,
    substring(conn_id, 8) AS app, attempt, latency_ms, urgency
FROM {db}.delivered
ANY LEFT JOIN (SELECT kafka_partition AS msg_partition, kafka_offset AS msg_offset, urgency FROM {db}.accepted)
USING (msg_partition, msg_offset)
WHERE startsWith(conn_id, 'bridge:');
