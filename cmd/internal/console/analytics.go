package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"golang.org/x/time/rate"

	"github.com/pushlog/pushlog/analytics"
)

// AnalyticsSource runs the dashboard queries of analytics/queries.
type AnalyticsSource interface {
	Run(ctx context.Context, q analytics.Query, o analytics.ReportOptions) (*analytics.Result, error)
	Ping(ctx context.Context) error
	Close() error
}

// Bounds on what a client controls.
const (
	// maxSenderBytes is the longest sender filter: the default
	// --max-vapid-sub, so every stored sender can be asked for.
	maxSenderBytes = 256
	maxRangeText   = 16
	minRange       = time.Minute
	defaultRange   = time.Hour
	// tableRows is the row limit of every analytics table.
	tableRows = 50
	// cacheEntries bounds the cached answers (ranges × senders).
	cacheEntries = 128
	// maxConcurrentQueries is how many query sets may run at once.
	maxConcurrentQueries = 2
)

// enableHint is what the analytics pages say when ClickHouse is not configured.
const enableHint = "Analytics is off: ClickHouse is not configured. Start `pushlog serve` with --clickhouse-addr HOST:9000 " +
	"(or CLICKHOUSE_ADDR; database --clickhouse-db, default pushlog). The analytics projector creates its tables and " +
	"catches up from the Kafka log; deploy/clickhouse/clickhouse.sh start runs a local ClickHouse for trying it."

// analyticsQueries are the dashboard queries the pages show, by file name.
var analyticsQueries = []string{"01_delivery_rate", "02_ack_latency", "03_volume_by_sender", "04_expiry_and_drops"}

type analyticsService struct {
	cfg     Config
	met     *consoleMetrics
	src     AnalyticsSource // nil: not configured
	limiter *rate.Limiter
	slots   chan struct{}
	healthC *cache[health]

	mu      sync.Mutex
	answers map[string]cachedAnswer
}

type cachedAnswer struct {
	at  time.Time
	ans analyticsAnswer
}

func newAnalyticsService(cfg Config, met *consoleMetrics) *analyticsService {
	s := &analyticsService{
		cfg: cfg, met: met, src: cfg.Analytics,
		limiter: rate.NewLimiter(rate.Limit(cfg.AnalyticsRate), 10),
		slots:   make(chan struct{}, maxConcurrentQueries),
		answers: map[string]cachedAnswer{},
	}
	if s.src == nil && cfg.ClickHouseAddr != "" {
		s.src = &clickhouseSource{addr: cfg.ClickHouseAddr, db: cfg.ClickHouseDB}
	}
	s.healthC = newCache(10*time.Second, 5*time.Second, s.ping)
	return s
}

func (s *analyticsService) configured() bool { return s.src != nil }

func (s *analyticsService) health(ctx context.Context) health {
	h, _ := s.healthC.get(ctx)
	return h
}

func (s *analyticsService) ping(ctx context.Context) (health, error) {
	if !s.configured() {
		return health{Hint: enableHint}, nil
	}
	if err := s.src.Ping(ctx); err != nil {
		return health{Configured: true, Error: err.Error()}, nil
	}
	return health{Configured: true, OK: true}, nil
}

func (s *analyticsService) close() {
	if s.src != nil {
		_ = s.src.Close()
	}
}

// analyticsAnswer is GET /api/analytics. Fields are only ever added.
type analyticsAnswer struct {
	Configured bool          `json:"configured"`
	Hint       string        `json:"hint,omitempty"`
	Range      string        `json:"range,omitempty"`
	Sender     string        `json:"sender,omitempty"`
	From       time.Time     `json:"from"`
	To         time.Time     `json:"to"`
	Summary    *summary      `json:"summary,omitempty"`
	Tables     []resultTable `json:"tables,omitempty"`
}

// summary are the headline figures: the "(all)" rows of the delivery-rate
// and ack-latency queries (for one sender on the sender page).
type summary struct {
	Accepted  float64  `json:"accepted"`
	Delivered float64  `json:"delivered"`
	Acked     float64  `json:"acked"`
	AckedPct  float64  `json:"acked_pct"`
	Expired   float64  `json:"expired"`
	Dropped   float64  `json:"dropped"`
	Deleted   float64  `json:"deleted"`
	P50ms     *float64 `json:"p50_ms"`
	P95ms     *float64 `json:"p95_ms"`
	P99ms     *float64 `json:"p99_ms"`
}

type resultTable struct {
	Name    string     `json:"name"`
	Title   string     `json:"title"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
	Error   string     `json:"error,omitempty"`
}

func (c *Console) serveAnalytics(w http.ResponseWriter, r *http.Request) {
	s := c.analytics
	if !s.configured() {
		writeJSON(w, http.StatusOK, analyticsAnswer{Hint: enableHint})
		return
	}
	q := r.URL.Query()
	rangeText := q.Get("range")
	if rangeText == "" {
		rangeText = defaultRange.String()
	}
	since, err := parseRange(rangeText, c.cfg.MaxRange)
	if err != nil {
		c.refuse(w, http.StatusBadRequest, "range", err.Error())
		return
	}
	sender := q.Get("sender")
	if err := checkSender(sender); err != nil {
		c.refuse(w, http.StatusBadRequest, "sender", err.Error())
		return
	}
	key := since.String() + "\x00" + sender
	if ans, ok := s.cached(key); ok {
		writeJSON(w, http.StatusOK, ans)
		return
	}
	if !s.limiter.Allow() {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, 1/c.cfg.AnalyticsRate))))
		c.refuse(w, http.StatusTooManyRequests, "rate", "too many analytics queries; retry in a few seconds")
		return
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		w.Header().Set("Retry-After", "2")
		c.refuse(w, http.StatusServiceUnavailable, "busy", "analytics queries are already running; retry in a few seconds")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.QueryTimeout)
	defer cancel()
	ans := s.query(ctx, since, sender)
	ans.Range = rangeText
	s.store(key, ans)
	writeJSON(w, http.StatusOK, ans)
}

func (s *analyticsService) cached(key string) (analyticsAnswer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.answers[key]
	if !ok || time.Since(e.at) >= s.cfg.AnalyticsTTL {
		return analyticsAnswer{}, false
	}
	return e.ans, true
}

func (s *analyticsService) store(key string, ans analyticsAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if len(s.answers) >= cacheEntries {
		for k, e := range s.answers {
			if now.Sub(e.at) >= s.cfg.AnalyticsTTL {
				delete(s.answers, k)
			}
		}
	}
	if len(s.answers) >= cacheEntries {
		clear(s.answers) // all fresh: many distinct ranges and senders at once
	}
	s.answers[key] = cachedAnswer{at: now, ans: ans}
}

// query runs the dashboard queries; one failing query does not hide the
// others (its table carries the error).
func (s *analyticsService) query(ctx context.Context, since time.Duration, sender string) analyticsAnswer {
	now := time.Now().UTC()
	ans := analyticsAnswer{Configured: true, Sender: sender, From: now.Add(-since), To: now, Tables: []resultTable{}}
	// An explicit end: without one the queries compare with the largest
	// DateTime, whose date ClickHouse 18.16 cannot represent (2106 reads
	// as 0000-00-00, so every row fell outside the window).
	opts := analytics.ReportOptions{Since: since, Until: now, Sender: sender, Limit: tableRows, Now: func() time.Time { return now }}
	failed := false
	results := map[string]*analytics.Result{}
	for _, name := range analyticsQueries {
		q, err := analytics.LookupQuery(name)
		if err != nil {
			ans.Tables = append(ans.Tables, resultTable{Name: name, Title: name, Error: err.Error()})
			failed = true
			continue
		}
		res, err := s.src.Run(ctx, q, opts)
		if err != nil {
			ans.Tables = append(ans.Tables, resultTable{Name: name, Title: q.Title, Error: err.Error()})
			failed = true
			continue
		}
		results[name] = res
		ans.Tables = append(ans.Tables, resultTable{Name: name, Title: q.Title, Columns: res.Columns, Rows: nonNil(res.Rows)})
	}
	ans.Summary = summarize(results["01_delivery_rate"], results["02_ack_latency"])
	if failed {
		s.met.queries.WithLabelValues("error").Inc()
	} else {
		s.met.queries.WithLabelValues("ok").Inc()
	}
	return ans
}

func nonNil(rows [][]string) [][]string {
	if rows == nil {
		return [][]string{}
	}
	return rows
}

// summarize reads the "(all)" rows; absent rows leave zeros (no traffic).
func summarize(rate, latency *analytics.Result) *summary {
	sm := &summary{}
	num := func(res *analytics.Result, row []string, col string) (float64, bool) {
		i := res.Column(col)
		if i < 0 || i >= len(row) {
			return 0, false
		}
		v, err := strconv.ParseFloat(row[i], 64)
		return v, err == nil
	}
	if rate != nil {
		if row, ok := rate.Find("(all)"); ok {
			for col, dst := range map[string]*float64{
				"accepted": &sm.Accepted, "delivered": &sm.Delivered, "acked": &sm.Acked, "acked_pct": &sm.AckedPct,
				"expired": &sm.Expired, "dropped": &sm.Dropped, "deleted": &sm.Deleted,
			} {
				*dst, _ = num(rate, row, col)
			}
		}
	}
	if latency != nil {
		if row, ok := latency.Find("(all)"); ok {
			for col, dst := range map[string]**float64{"p50_ms": &sm.P50ms, "p95_ms": &sm.P95ms, "p99_ms": &sm.P99ms} {
				if v, ok := num(latency, row, col); ok {
					*dst = &v
				}
			}
		}
	}
	return sm
}

// parseRange reads a range such as 15m, 6h or 7d, within [1m, max].
func parseRange(s string, maxRange time.Duration) (time.Duration, error) {
	if len(s) > maxRangeText {
		return 0, fmt.Errorf("range: longer than %d characters", maxRangeText)
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 366 {
			return 0, fmt.Errorf("range: %q is not a number of days", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("range: %q: want a duration such as 15m, 6h or 7d", s)
		}
	}
	if d < minRange || d > maxRange {
		return 0, fmt.Errorf("range: %s is outside %s..%s", d, minRange, maxRange)
	}
	return d, nil
}

// checkSender bounds a sender filter: a VAPID sub as ingest stores it.
func checkSender(s string) error {
	if len(s) > maxSenderBytes {
		return fmt.Errorf("sender: longer than %d bytes", maxSenderBytes)
	}
	if !utf8.ValidString(s) {
		return errors.New("sender: not UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return errors.New("sender: contains a control character")
		}
	}
	return nil
}

// clickhouseSource runs the queries on ClickHouse, connecting on first use
// (and again after a failed connect): the console starts without it.
type clickhouseSource struct {
	addr, db string

	mu   sync.Mutex
	conn driver.Conn
}

func (c *clickhouseSource) get(ctx context.Context) (driver.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn, nil
	}
	conn, err := analytics.Open(ctx, c.addr, c.db)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	return conn, nil
}

func (c *clickhouseSource) Run(ctx context.Context, q analytics.Query, o analytics.ReportOptions) (*analytics.Result, error) {
	conn, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	return analytics.RunQuery(ctx, conn, c.db, q, o)
}

func (c *clickhouseSource) Ping(ctx context.Context) error {
	conn, err := c.get(ctx)
	if err != nil {
		return err
	}
	return conn.Ping(ctx)
}

func (c *clickhouseSource) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}
