package ingest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const (
	testPartitions = 4
	testPublicURL  = "https://push.example.com"
	testUAID       = "0123456789abcdef0123456789abcdef"
	testChannel    = "5b7e0d4c-8f1a-4c2b-9d3e-6a7b8c9d0e1f"
)

// env is one ingest server wired to an in-process Kafka.
type env struct {
	t       *testing.T
	cluster *kfake.Cluster
	client  *kgo.Client
	sealer  *schema.Sealer
	srv     *Server
	vapid   *testVAPID
}

type testVAPID struct {
	priv *ecdsa.PrivateKey
	raw  []byte // 65-byte uncompressed public key
	k    string // base64url unpadded
}

func newTestVAPID(t testing.TB) *testVAPID {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := priv.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return &testVAPID{priv: priv, raw: raw, k: base64.RawURLEncoding.EncodeToString(raw)}
}

func (v *testVAPID) keyHash() []byte {
	s := sha256.Sum256(v.raw)
	return s[:]
}

// jwt signs claims with ES256.
func (v *testVAPID) jwt(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(v.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// header returns a valid "vapid t=…, k=…" header for aud.
func (v *testVAPID) header(t testing.TB, aud string) string {
	return "vapid t=" + v.jwt(t, jwt.MapClaims{
		"aud": aud, "exp": time.Now().Add(12 * time.Hour).Unix(), "sub": "mailto:ops@example.com",
	}) + ", k=" + v.k
}

func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, schema.TopicMessages)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newProducer(t testing.TB, addrs []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RequiredAcks(kgo.AllISRAcks()),
		// Short retry backoff and metadata age keep recovery tests quick
		// (kgo waits MetadataMinAge, 5s by default, before re-reading
		// metadata after a failed produce).
		kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond }),
		kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newSealer(t testing.TB) *schema.Sealer {
	t.Helper()
	key := bytes.Repeat([]byte{7}, schema.KeySize)
	s, err := schema.NewSealer([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t *testing.T, mutate ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, cluster: newCluster(t), sealer: newSealer(t), vapid: newTestVAPID(t)}
	e.client = newProducer(t, e.cluster.ListenAddrs())
	cfg := Config{
		PublicURL:  testPublicURL,
		Sealer:     e.sealer,
		Producer:   e.client,
		Partitions: testPartitions,
		Logger:     quietLogger(),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	return e
}

// endpoint returns the path of a v1 (keyHash nil) or v2 endpoint.
func (e *env) endpoint(uaid, channel string, keyHash []byte) string {
	e.t.Helper()
	tok, err := e.sealer.SealEndpoint(schema.Endpoint{UAID: uaid, ChannelID: channel, KeyHash: keyHash})
	if err != nil {
		e.t.Fatal(err)
	}
	if keyHash != nil {
		return "/wpush/v2/" + tok
	}
	return "/wpush/v1/" + tok
}

// do sends a request straight to the handler. Header names are set raw, as
// net/http's server would canonicalise them.
func (e *env) do(method, path string, hdr map[string]string, body []byte) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rr := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rr, req)
	return rr
}

// errBody decodes an autopush-shaped error body and checks its shape.
func errBody(t *testing.T, rr *httptest.ResponseRecorder) errorBody {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal(rr.Body.Bytes(), &b); err != nil {
		t.Fatalf("error body %q is not JSON: %v", rr.Body.String(), err)
	}
	if ct := rr.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if b.Code != rr.Code || b.Error != http.StatusText(rr.Code) || b.Message == "" || b.MoreInfo == "" {
		t.Errorf("bad error body %+v for status %d", b, rr.Code)
	}
	return b
}

// readBack consumes the record at partition/offset of pushlog.messages and
// decodes it.
func readBack(t *testing.T, addrs []string, partition int32, offset int64) (*kgo.Record, *pb.Event) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		schema.TopicMessages: {partition: kgo.NewOffset().At(offset)},
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("record %d/%d not readable: %v", partition, offset, err)
		}
		for _, r := range fs.Records() {
			if r.Offset == offset {
				ev, err := schema.Decode(r)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				return r, ev
			}
		}
	}
}

// openLocation opens the message id of a 201's Location header.
func (e *env) openLocation(loc string) schema.MessageID {
	e.t.Helper()
	prefix := testPublicURL + "/m/"
	if len(loc) <= len(prefix) || loc[:len(prefix)] != prefix {
		e.t.Fatalf("Location %q does not start with %q", loc, prefix)
	}
	m, err := e.sealer.OpenMessageID(loc[len(prefix):])
	if err != nil {
		e.t.Fatalf("Location id: %v", err)
	}
	return m
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func stdB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
