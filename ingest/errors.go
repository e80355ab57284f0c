package ingest

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// Error numbers of autopush's HTTP API (autopush-rs docs/src/errors.md), so
// existing sender libraries and tooling understand pushlog's errors.
const (
	errnoInvalidToken     = 102 // 404: endpoint token (or message id) does not decode
	errnoUAIDReset        = 103 // 410: the UAID was reset or expired
	errnoPayloadTooLarge  = 104 // 413
	errnoNoSubscription   = 106 // 410: the channel was unregistered
	errnoInvalidAuth      = 109 // 401: any VAPID failure
	errnoInvalidCrypto    = 110 // 400: Content-Encoding / Encryption / Crypto-Key
	errnoMissingHeader    = 111 // 400: TTL missing or not a number; also a bad Urgency
	errnoInvalidTopic     = 113 // 400
	errnoInvalidTTL       = 114 // 400: negative TTL
	errnoUnavailable      = 201 // 503: retry later with back-off
	errnoUnknown          = 999 // anything else
	moreInfoURL           = "https://mozilla-services.github.io/autopush-rs/errors.html"
	goneCacheControl      = "max-age=86400"
	headerRetryAfter      = "Retry-After"
	headerCacheControl    = "Cache-Control"
	contentTypeJSONHeader = "application/json"
)

// apiError is an HTTP error rendered in autopush's JSON shape.
type apiError struct {
	status     int
	errno      int
	msg        string
	retryAfter int // seconds; set on 503
}

func (e *apiError) Error() string {
	return strconv.Itoa(e.status) + " errno " + strconv.Itoa(e.errno) + ": " + e.msg
}

func newError(status, errno int, msg string) *apiError {
	return &apiError{status: status, errno: errno, msg: msg}
}

func badRequest(errno int, msg string) *apiError { return newError(http.StatusBadRequest, errno, msg) }

func unauthorized(msg string) *apiError {
	return newError(http.StatusUnauthorized, errnoInvalidAuth, msg)
}

func unavailable(msg string, retryAfter int) *apiError {
	e := newError(http.StatusServiceUnavailable, errnoUnavailable, msg)
	e.retryAfter = retryAfter
	return e
}

var (
	errInvalidToken   = newError(http.StatusNotFound, errnoInvalidToken, "Invalid token")
	errNoSubscription = newError(http.StatusGone, errnoNoSubscription, "No such subscription")
	errUAIDReset      = newError(http.StatusGone, errnoUAIDReset, "UAID not found")
	errTooLarge       = newError(http.StatusRequestEntityTooLarge, errnoPayloadTooLarge, "A payload reached size limit.")
	errNoTTL          = badRequest(errnoMissingHeader, "Missing TTL value")
	errNegativeTTL    = badRequest(errnoInvalidTTL, "TTL must not be negative")
	errInvalidMsgID   = badRequest(errnoInvalidToken, "Invalid message ID")
	errTokenTooLong   = unauthorized("VAPID token too long")
)

// authHeaderSlack is what an Authorization header holds beside its JWT: the
// scheme, "t=", ", k=" and an 88-character key, with room for spaces and a
// few unknown parameters.
const authHeaderSlack = 256

// errorBody is the JSON body of every error response.
type errorBody struct {
	Code     int    `json:"code"`
	Errno    int    `json:"errno"`
	Error    string `json:"error"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
}

// writeError renders e; it is also used for echo's own errors (404, 405).
func writeError(w http.ResponseWriter, e *apiError) {
	h := w.Header()
	h.Set(echo.HeaderContentType, contentTypeJSONHeader)
	switch e.status {
	case http.StatusGone:
		h.Set(headerCacheControl, goneCacheControl)
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		ra := e.retryAfter
		if ra <= 0 {
			ra = 1
		}
		h.Set(headerRetryAfter, strconv.Itoa(ra))
	}
	body, _ := json.Marshal(errorBody{ // cannot fail: plain strings and ints
		Code:     e.status,
		Errno:    e.errno,
		Error:    http.StatusText(e.status),
		Message:  e.msg,
		MoreInfo: moreInfoURL,
	})
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}

// toAPIError maps any handler error (ours or echo's) to an apiError.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok && s != "" {
			msg = s
		}
		errno := errnoUnknown
		if he.Code == http.StatusNotFound {
			errno = errnoInvalidToken // autopush: unknown URL = invalid endpoint
		}
		return newError(he.Code, errno, msg)
	}
	return newError(http.StatusInternalServerError, errnoUnknown, "Internal server error")
}

// errorHandler is echo's HTTPErrorHandler: every error leaves as autopush JSON.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	ae := toAPIError(err)
	if ae.status >= 500 {
		s.log.Warn("push request failed", "path", c.Request().URL.Path, "status", ae.status, "err", err)
	} else if s.log.Enabled(c.Request().Context(), slog.LevelDebug) {
		s.log.Debug("push request rejected", "path", c.Request().URL.Path, "status", ae.status, "errno", ae.errno, "msg", ae.msg)
	}
	if c.Request().Method == http.MethodHead {
		c.Response().Header().Set(echo.HeaderContentType, contentTypeJSONHeader)
		c.Response().WriteHeader(ae.status)
		return
	}
	writeError(c.Response(), ae)
}
