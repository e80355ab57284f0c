package analytics

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// SenderCounts is one VAPID key's delivery report: the messages it had
// accepted in [Since, Until) and what became of them as known now. Each
// message is counted in exactly one of Acked, Expired, Dropped, Deleted or
// Pending, by its earliest settlement (as schema.MessageStatus folds it),
// so Accepted = Acked + Expired + Dropped + Deleted + Pending. Deleted are
// the owner's Dropped(deleted) settlements (issue 16: once per message),
// not part of Dropped here.
type SenderCounts struct {
	KeyHash         string // SHA-256 of the VAPID public key, lowercase hex
	Since, Until    time.Time
	Accepted        uint64
	Delivered       uint64 // sent to the user agent at least once
	Acked           uint64
	Expired         uint64
	Dropped         uint64
	DroppedByReason map[string]uint64
	Deleted         uint64
	Pending         uint64
	AckP50, AckP95  float64 // accept-to-first-ack latency, milliseconds
	AckP99          float64
	Urgency         map[string]uint64 // accepted by urgency
}

// Balanced reports whether the accounting identity holds.
func (c SenderCounts) Balanced() bool {
	return c.Accepted == c.Acked+c.Expired+c.Dropped+c.Deleted+c.Pending
}

// senderCohort selects the (partition, offset) of the messages accepted
// from key in the window; every other count is of messages IN it, so
// nothing but this key's messages is ever counted. The date bound lets
// ClickHouse skip other days' partitions.
func senderCohort(db, key string, since, until time.Time) string {
	return fmt.Sprintf("SELECT kafka_partition, kafka_offset FROM %s.accepted WHERE vapid_key_hash = %s"+
		" AND date >= toDate(%d) AND date <= toDate(%d) AND time_ms >= %d AND time_ms < %d",
		db, QuoteString(key), since.Unix(), until.Unix(), since.UnixMilli(), until.UnixMilli())
}

// outcomeRows selects one row (p, o, kind, reason, t) per settling event of
// a cohort message; outcomes cannot precede acceptance, hence the date bound.
func outcomeRows(db, cohort string, since time.Time) string {
	where := fmt.Sprintf(" WHERE date >= toDate(%d) AND (msg_partition, msg_offset) IN (%s)", since.Unix(), cohort)
	parts := []string{
		"SELECT msg_partition AS p, msg_offset AS o, 'acked' AS kind, '' AS why, time_ms AS t FROM " + db + ".acked" + where,
		"SELECT msg_partition AS p, msg_offset AS o, 'expired' AS kind, '' AS why, time_ms AS t FROM " + db + ".expired" + where,
		"SELECT msg_partition AS p, msg_offset AS o, if(reason = 'deleted', 'deleted', 'dropped') AS kind," +
			" if(reason = 'deleted', '', reason) AS why, time_ms AS t FROM " + db + ".dropped" + where,
	}
	return strings.Join(parts, " UNION ALL ")
}

// SenderReport computes the report of the VAPID key whose SHA-256 is
// keyHash (64 lowercase hex) over [since, until). Four queries, each
// bounded by the cohort of the window (ClickHouse 18.16 and current).
func SenderReport(ctx context.Context, conn driver.Conn, db, keyHash string, since, until time.Time) (SenderCounts, error) {
	if err := ValidateDatabase(db); err != nil {
		return SenderCounts{}, err
	}
	if b, err := hex.DecodeString(keyHash); err != nil || len(b) != 32 || strings.ToLower(keyHash) != keyHash {
		return SenderCounts{}, fmt.Errorf("sender report: key hash %q is not 64 lowercase hex", keyHash)
	}
	if !since.Before(until) {
		return SenderCounts{}, errors.New("sender report: since must be before until")
	}
	c := SenderCounts{KeyHash: keyHash, Since: since.UTC(), Until: until.UTC(),
		DroppedByReason: map[string]uint64{}, Urgency: map[string]uint64{}}
	cohort := senderCohort(db, keyHash, since, until)

	q := fmt.Sprintf("SELECT urgency, uniqExact(kafka_partition, kafka_offset) FROM %s.accepted WHERE vapid_key_hash = %s"+
		" AND date >= toDate(%d) AND date <= toDate(%d) AND time_ms >= %d AND time_ms < %d GROUP BY urgency",
		db, QuoteString(keyHash), since.Unix(), until.Unix(), since.UnixMilli(), until.UnixMilli())
	if err := eachRow(ctx, conn, q, func(scan func(...any) error) error {
		var urgency string
		var n uint64
		if err := scan(&urgency, &n); err != nil {
			return err
		}
		c.Urgency[urgency] += n
		c.Accepted += n
		return nil
	}); err != nil {
		return c, fmt.Errorf("sender report: accepted: %w", err)
	}

	q = "SELECT kind, why, count() FROM (SELECT p, o, argMin(kind, t) AS kind, argMin(why, t) AS why FROM (" +
		outcomeRows(db, cohort, since) + ") GROUP BY p, o) GROUP BY kind, why"
	var settled uint64
	if err := eachRow(ctx, conn, q, func(scan func(...any) error) error {
		var kind, why string
		var n uint64
		if err := scan(&kind, &why, &n); err != nil {
			return err
		}
		settled += n
		switch kind {
		case "acked":
			c.Acked += n
		case "expired":
			c.Expired += n
		case "deleted":
			c.Deleted += n
		default:
			c.Dropped += n
			c.DroppedByReason[why] += n
		}
		return nil
	}); err != nil {
		return c, fmt.Errorf("sender report: outcomes: %w", err)
	}
	if settled > c.Accepted {
		// Only if the accepted rows changed between the two queries
		// (a rebuild): the identity cannot be kept, so say so.
		return c, fmt.Errorf("sender report: %d settled of %d accepted: analytics changed during the report, retry", settled, c.Accepted)
	}
	c.Pending = c.Accepted - settled

	q = fmt.Sprintf("SELECT uniqExact(msg_partition, msg_offset) FROM %s.delivered WHERE date >= toDate(%d) AND (msg_partition, msg_offset) IN (%s)",
		db, since.Unix(), cohort)
	if err := eachRow(ctx, conn, q, func(scan func(...any) error) error { return scan(&c.Delivered) }); err != nil {
		return c, fmt.Errorf("sender report: delivered: %w", err)
	}

	q = fmt.Sprintf("SELECT count(), quantilesExact(0.5, 0.95, 0.99)(l) FROM (SELECT min(latency_ms) AS l FROM %s.acked"+
		" WHERE date >= toDate(%d) AND (msg_partition, msg_offset) IN (%s) GROUP BY msg_partition, msg_offset)", db, since.Unix(), cohort)
	if err := eachRow(ctx, conn, q, func(scan func(...any) error) error {
		var n uint64
		var qs []int64
		if err := scan(&n, &qs); err != nil {
			return err
		}
		if n > 0 && len(qs) == 3 {
			c.AckP50, c.AckP95, c.AckP99 = float64(qs[0]), float64(qs[1]), float64(qs[2])
		}
		return nil
	}); err != nil {
		return c, fmt.Errorf("sender report: latency: %w", err)
	}
	return c, nil
}

func eachRow(ctx context.Context, conn driver.Conn, q string, row func(scan func(...any) error) error) error {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// SenderReporter answers sender reports from ClickHouse, connecting on
// first use (and again after a failed connection): serve starts while
// ClickHouse is down, and a report then fails alone.
type SenderReporter struct {
	addr, db string
	mu       sync.Mutex
	conn     driver.Conn
}

// NewSenderReporter reports from the ClickHouse at addr, database db.
func NewSenderReporter(addr, db string) (*SenderReporter, error) {
	if err := ValidateDatabase(db); err != nil {
		return nil, err
	}
	return &SenderReporter{addr: addr, db: db}, nil
}

// Report computes keyHash's report over [since, until).
func (r *SenderReporter) Report(ctx context.Context, keyHash string, since, until time.Time) (SenderCounts, error) {
	conn, err := r.connection(ctx)
	if err != nil {
		return SenderCounts{}, err
	}
	return SenderReport(ctx, conn, r.db, keyHash, since, until)
}

func (r *SenderReporter) connection(ctx context.Context) (driver.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		return r.conn, nil
	}
	conn, err := Open(ctx, r.addr, r.db)
	if err != nil {
		return nil, err
	}
	r.conn = conn
	return conn, nil
}

// Close closes the connection, if one was made.
func (r *SenderReporter) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return nil
	}
	err := r.conn.Close()
	r.conn = nil
	return err
}
