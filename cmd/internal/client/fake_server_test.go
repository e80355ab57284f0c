package client

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/schema"
)

// fakeServer plays the push service's side for listen and send: the
// WebSocket protocol on GET / and a push endpoint on POST /push/{channel}
// that forwards the body, as is, as a notification.
type fakeServer struct {
	t   *testing.T
	srv *httptest.Server

	mu         sync.Mutex
	conn       *websocket.Conn // the live client socket, nil between connections
	fixedUAID  string          // uaid handed out; "" = keep a valid requested one, else new
	resetUAID  bool            // always hand out a new uaid (the old subscription is gone)
	dropAfter  int             // close the socket after this many register replies (once)
	closeCode  int             // close with this code right after hello (once)
	regStatus  []int           // statuses for the next register replies (then 200)
	hellos     []helloRequest
	registers  []registerRequest
	unregister []string
	queued     [][]byte // notifications waiting for a connection
	pushes     []*http.Request
	versions   int

	acks  chan ackUpdate
	pongs chan string
	conns chan struct{} // one value per closed client socket
	// checkPush, when set, inspects each POST (headers and body).
	checkPush func(r *http.Request, body []byte)
}

func newFakeServer(t *testing.T) *fakeServer {
	f := &fakeServer{t: t, acks: make(chan ackUpdate, 100), pongs: make(chan string, 10), conns: make(chan struct{}, 100)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", f.serveWS)
	mux.HandleFunc("POST /push/{channel}", f.servePush)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) wsURL() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/" }

var upgrader = websocket.Upgrader{Subprotocols: []string{subprotocol}}

func (f *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		f.t.Errorf("upgrade: %v", err)
		return
	}
	defer func() {
		f.mu.Lock()
		if f.conn == conn {
			f.conn = nil
		}
		f.mu.Unlock()
		conn.Close()
		f.conns <- struct{}{}
	}()
	if conn.Subprotocol() != subprotocol {
		f.t.Errorf("client did not ask for %q", subprotocol)
	}
	conn.SetPongHandler(func(s string) error { f.pongs <- s; return nil })
	closing := false
	for {
		kind, raw, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if closing {
			continue // a close frame was sent: drain until the client answers it
		}
		if kind != websocket.TextMessage {
			f.t.Errorf("client sent a frame of type %d", kind)
			return
		}
		open, sentClose := f.handle(conn, raw)
		if !open {
			return
		}
		closing = sentClose
	}
}

// handle answers one client frame; open false closes the socket,
// sentClose says a close frame went out.
func (f *fakeServer) handle(conn *websocket.Conn, raw []byte) (open, sentClose bool) {
	mt, err := messageType(raw)
	if err != nil {
		f.t.Errorf("client sent bad JSON %q: %v", raw, err)
		return false, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch mt {
	case "hello":
		var h helloRequest
		_ = json.Unmarshal(raw, &h)
		f.hellos = append(f.hellos, h)
		if !h.UseWebPush {
			f.t.Errorf("hello without use_webpush: %s", raw)
		}
		uaid := f.fixedUAID
		if _, err := schema.ParseUAID(h.UAID); uaid == "" && err == nil && !f.resetUAID {
			uaid = h.UAID
		}
		if uaid == "" || f.resetUAID {
			uaid = schema.NewUAID()
		}
		f.writeLocked(conn, map[string]any{"messageType": "hello", "uaid": uaid, "status": 200, "use_webpush": true, "broadcasts": map[string]any{}})
		if f.closeCode != 0 {
			msg := websocket.FormatCloseMessage(f.closeCode, "go away")
			_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			f.closeCode = 0
			return true, true
		}
		f.conn = conn
		for _, q := range f.queued {
			f.writeRawLocked(conn, q)
		}
		f.queued = nil
	case "register":
		var rq registerRequest
		_ = json.Unmarshal(raw, &rq)
		f.registers = append(f.registers, rq)
		if norm, err := schema.NormalizeChannelID(rq.ChannelID); err != nil || norm != rq.ChannelID {
			f.t.Errorf("channelID %q is not a lowercase dashed UUID", rq.ChannelID)
		}
		status := 200
		if len(f.regStatus) > 0 {
			status, f.regStatus = f.regStatus[0], f.regStatus[1:]
		}
		// A reply for some other channel first, which the client must skip.
		f.writeLocked(conn, map[string]any{"messageType": "register", "channelID": newChannelID(), "status": 200, "pushEndpoint": f.srv.URL + "/push/x"})
		f.writeLocked(conn, map[string]any{"messageType": "register", "channelID": rq.ChannelID, "status": status,
			"pushEndpoint": f.srv.URL + "/push/" + rq.ChannelID})
		if f.dropAfter > 0 && len(f.registers) == f.dropAfter {
			f.dropAfter = 0
			f.conn = nil
			return false, false
		}
	case "ack":
		var a ackRequest
		_ = json.Unmarshal(raw, &a)
		for _, u := range a.Updates {
			f.acks <- u
		}
	case "unregister":
		var u unregisterRequest
		_ = json.Unmarshal(raw, &u)
		f.unregister = append(f.unregister, u.ChannelID)
		f.writeLocked(conn, map[string]any{"messageType": "unregister", "channelID": u.ChannelID, "status": 200})
	case "", "ping":
		f.writeRawLocked(conn, []byte("{}"))
	default:
		f.t.Errorf("unexpected client message %s", raw)
	}
	return true, false
}

func (f *fakeServer) writeLocked(conn *websocket.Conn, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		f.t.Errorf("marshal: %v", err)
		return
	}
	f.writeRawLocked(conn, b)
}

func (f *fakeServer) writeRawLocked(conn *websocket.Conn, b []byte) {
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		f.t.Logf("write to client: %v", err)
	}
}

// deliver sends a notification frame now, or on the next hello.
func (f *fakeServer) deliver(frame []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		f.writeRawLocked(f.conn, frame)
		return
	}
	f.queued = append(f.queued, frame)
}

func (f *fakeServer) servePush(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if f.checkPush != nil {
		f.checkPush(r, body)
	}
	f.mu.Lock()
	f.pushes = append(f.pushes, r)
	f.versions++
	version := fmt.Sprintf("v%d", f.versions)
	f.mu.Unlock()

	n := map[string]any{"messageType": "notification", "channelID": r.PathValue("channel"), "version": version}
	if len(body) > 0 {
		n["data"] = base64.RawURLEncoding.EncodeToString(body)
		h := map[string]string{"encoding": r.Header.Get("Content-Encoding")}
		if h["encoding"] == "aesgcm" {
			h["encryption"] = r.Header.Get("Encryption")
			// Like the server, forward only the dh part of Crypto-Key.
			for _, p := range strings.Split(r.Header.Get("Crypto-Key"), ";") {
				if strings.HasPrefix(p, "dh=") {
					h["crypto_key"] = p
				}
			}
		}
		n["headers"] = h
	}
	frame, _ := json.Marshal(n)
	f.deliver(frame)
	w.Header().Set("Location", f.srv.URL+"/m/"+version)
	w.Header().Set("TTL", r.Header.Get("TTL"))
	w.WriteHeader(http.StatusCreated)
}

func (f *fakeServer) snapshot() (hellos []helloRequest, registers []registerRequest, unregister []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]helloRequest(nil), f.hellos...), append([]registerRequest(nil), f.registers...), append([]string(nil), f.unregister...)
}

// nextAck waits for the client's next ack.
func (f *fakeServer) nextAck(t *testing.T) ackUpdate {
	t.Helper()
	select {
	case a := <-f.acks:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no ack from the client")
		return ackUpdate{}
	}
}
