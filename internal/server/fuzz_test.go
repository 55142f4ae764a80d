package server_test

// Fuzz targets for the HTTP API's input (docs/reliability.md):
// the bodies of POST /api/rooms/{id}/messages and /events and the query of
// GET /api/rooms/{id}/messages, each through the real handler (ServeHTTP
// on a recorder, no socket) of a server on a memory store. Each checks the
// answer against SPEC §5 stated again: accepted input gives the documented
// success with what was sent in it; refused input gets 400 with a
// protocol.Error that has a known code and a message. The seeds run in
// every go test; scripts/fuzz.sh runs them longer.

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
	"github.com/roomchat/roomchat/internal/store"
)

// fuzzRoom is the one room the fuzz targets post to: a fixed room and a
// retention of 100 messages keep the memory store's state bounded over
// millions of runs.
const fuzzRoom = "fuzz"

// newFuzzServer is a server on a memory store that keeps keep messages
// per room, without rate limits, its logs discarded; it is shut down when
// f's tests end. The fuzz targets call its handler, not a socket.
func newFuzzServer(f *testing.F, keep int) *server.Server {
	f.Helper()
	st := store.NewMemory(store.Retention{MaxMessages: keep})
	f.Cleanup(func() { st.Close() }) // after the server's shutdown
	return chattest.NewInProcess(f, chattest.NoRate, func(c *server.Config) {
		c.Store, c.Logger = st, nil
	}).Server
}

// serve runs one request through srv's handler and returns the answer.
func serve(srv http.Handler, method, target string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/", bytes.NewReader(body))
	r.URL.Path = target
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	return w
}

// checkHTTPError fails t unless w is a JSON protocol.Error with status
// and one of codes, with a message.
func checkHTTPError(t *testing.T, w *httptest.ResponseRecorder, status int, codes ...string) protocol.Error {
	t.Helper()
	var e protocol.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("status %d with body %q: not a protocol.Error: %v", w.Code, w.Body, err)
	}
	if w.Code != status || !slices.Contains(codes, e.Code) || e.Message == "" {
		t.Fatalf("got %d %+v, want %d with a code in %v and a message", w.Code, e, status, codes)
	}
	return e
}

// bodySeeds are bodies for both POST endpoints.
var bodySeeds = []string{
	`{"name":"alice","message":"hi there"}`, `{"message":"hi"}`, `{"message":"  "}`, `{"message":""}`,
	`{"name":" \t","message":"x"}`, `{"name":"a\u0000b","message":"x"}`, `{"message":"x","message":"y"}`,
	`{"Message":"case"}`, `{"message":1}`, `[]`, `null`, `"x"`, ``, `{`, `{"message":"\ud800"}`,
	`{"name":"reaction","data":{"emoji":"👍"}}`, `{"name":"r","data":null}`, `{"name":"bad name"}`,
	`{"name":"r","data":"` + strings.Repeat("x", 8<<10) + `"}`, `{"name":"r","data":[1,{"a":1,"a":2}]}`,
	`{"message":"` + strings.Repeat("é", 4001) + `"}`, `{"message":"x"}` + "\n", `{"message":"x"} {}`,
}

// decodeStrict decodes body as SPEC §4 reads a frame (unique,
// case-sensitive keys, valid UTF-8) into v, and says whether the body is a
// JSON object. It is the oracle the fuzz targets compare the handler with.
func decodeStrict(body []byte, v any) bool {
	if err := json.Unmarshal(body, new(map[string]any)); err != nil {
		return false
	}
	return json.Unmarshal(body, v) == nil
}

// FuzzPostMessage: POST /api/rooms/{id}/messages is 201 with the stored
// message (as sent, under the trimmed name or "bot", a seq past the
// previous one) exactly when the body is a JSON object whose name is
// absent or valid and whose message is valid; otherwise 400 bad_json,
// bad_payload or too_long (413 too_large only over the 64 KiB cap).
func FuzzPostMessage(f *testing.F) {
	for _, s := range bodySeeds {
		f.Add([]byte(s))
	}
	srv := newFuzzServer(f, 100)
	lim := protocol.DefaultLimits()
	var last int64
	f.Fuzz(func(t *testing.T, body []byte) {
		w := serve(srv, "POST", "/api/rooms/"+fuzzRoom+"/messages", body)
		if int64(len(body)) > lim.MaxFrame {
			checkHTTPError(t, w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge)
			return
		}
		var p server.PostMessage
		ok := decodeStrict(body, &p)
		name := "bot"
		if ok && p.Name != "" {
			n, err := lim.CleanName("name", p.Name)
			ok, name = err == nil, n
		}
		ok = ok && lim.CheckMessage("message", p.Message) == nil
		if !ok {
			checkHTTPError(t, w, http.StatusBadRequest, protocol.CodeBadJSON, protocol.CodeBadPayload, protocol.CodeTooLong)
			return
		}
		if w.Code != http.StatusCreated {
			t.Fatalf("body %q: got %d %s, want 201", body, w.Code, w.Body)
		}
		var m protocol.Message
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatalf("201 body %q: %v", w.Body, err)
		}
		if m.Message != p.Message || m.From.Name != name || m.RoomID != fuzzRoom || m.Seq <= last || m.ID == "" || m.TS.IsZero() {
			t.Fatalf("body %q stored as %+v; want message %q from %q after seq %d", body, m, p.Message, name, last)
		}
		last = m.Seq
	})
}

// FuzzPostEvent: POST /api/rooms/{id}/events is 202 naming the event
// exactly when the body is a JSON object with a valid name and data of at
// most 8 KiB; otherwise 400 bad_json, bad_payload or too_long.
func FuzzPostEvent(f *testing.F) {
	for _, s := range bodySeeds {
		f.Add([]byte(s))
	}
	srv := newFuzzServer(f, 100)
	lim := protocol.DefaultLimits()
	f.Fuzz(func(t *testing.T, body []byte) {
		w := serve(srv, "POST", "/api/rooms/"+fuzzRoom+"/events", body)
		if int64(len(body)) > lim.MaxFrame {
			checkHTTPError(t, w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge)
			return
		}
		var p server.PostEvent
		ok := decodeStrict(body, &p) && lim.CheckEventName("name", p.Name) == nil && lim.CheckEventData("data", p.Data) == nil
		if !ok {
			checkHTTPError(t, w, http.StatusBadRequest, protocol.CodeBadJSON, protocol.CodeBadPayload, protocol.CodeTooLong)
			return
		}
		var ev server.EventPosted
		if w.Code != http.StatusAccepted || json.Unmarshal(w.Body.Bytes(), &ev) != nil {
			t.Fatalf("body %q: got %d %s, want 202", body, w.Code, w.Body)
		}
		if ev.Name != p.Name || ev.RoomID != fuzzRoom || ev.Delivered != 0 {
			t.Fatalf("body %q: got %+v, want event %q to room %q delivered to nobody", body, ev, p.Name, fuzzRoom)
		}
	})
}

// FuzzListMessages: GET /api/rooms/{id}/messages?query on a room of 150
// messages. The query is valid exactly when before and after are absent
// or whole numbers ≥ 0 and limit is absent or 1–500; then the answer is a
// page of at most limit messages with consecutive seqs inside (after,
// before), the newest ones unless only after is given, and lastSeq 150.
// Otherwise 400 bad_payload naming the parameter.
func FuzzListMessages(f *testing.F) {
	for _, s := range []string{
		"", "limit=10", "after=0", "after=140", "before=20", "before=20&after=5&limit=3", "limit=0", "limit=501",
		"limit=500", "after=-1", "before=x", "after=1e3", "after=%2B5", "after=+5", "after=0x10", "limit=1&limit=2",
		"after=9223372036854775807", "after=9223372036854775808", "before=1", "a=%zz&limit=2", "after=&before=", ";limit=3",
	} {
		f.Add(s)
	}
	srv := newFuzzServer(f, 1000) // keeps every message: nothing is posted while fuzzing
	const n = 150
	for i := 1; i <= n; i++ {
		w := serve(srv, "POST", "/api/rooms/"+fuzzRoom+"/messages", fmt.Appendf(nil, `{"message":"m%d"}`, i))
		if w.Code != http.StatusCreated {
			f.Fatalf("storing message %d: %d %s", i, w.Code, w.Body)
		}
	}
	param := func(q url.Values, name string, def int64) (int64, bool) {
		v := q.Get(name)
		if v == "" {
			return def, true
		}
		x, err := strconv.ParseInt(v, 10, 64)
		return x, err == nil && x >= 0
	}
	f.Fuzz(func(t *testing.T, query string) {
		r := httptest.NewRequest("GET", "/api/rooms/"+fuzzRoom+"/messages", nil)
		r.URL.RawQuery = query
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)

		q, _ := url.ParseQuery(query) // what is left of a bad query, as the handler reads it
		before, okB := param(q, "before", 0)
		after, okA := param(q, "after", 0)
		limit, okL := param(q, "limit", 50)
		okL = okL && limit >= 1 && limit <= 500
		if !okB || !okA || !okL {
			e := checkHTTPError(t, w, http.StatusBadRequest, protocol.CodeBadPayload)
			if e.Field != "before" && e.Field != "after" && e.Field != "limit" {
				t.Fatalf("query %q refused naming %q, want a parameter", query, e.Field)
			}
			return
		}
		var page server.MessagePage
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &page) != nil {
			t.Fatalf("query %q: got %d %s, want 200 with a page", query, w.Code, w.Body)
		}
		if page.RoomID != fuzzRoom || page.LastSeq != n || int64(len(page.Messages)) > limit {
			t.Fatalf("query %q: room %q lastSeq %d, %d messages; want %q, %d, at most %d", query, page.RoomID, page.LastSeq, len(page.Messages), fuzzRoom, n, limit)
		}
		hi := int64(n + 1) // the page's seqs are in (after, hi)
		if before > 0 {
			hi = min(before, hi)
		}
		want := min(limit, max(0, hi-after-1))
		if int64(len(page.Messages)) != want {
			t.Fatalf("query %q: %d messages, want %d", query, len(page.Messages), want)
		}
		newest := q.Get("after") == "" || before != 0
		for i, m := range page.Messages {
			first := after + 1
			if newest {
				first = hi - want
			}
			if m.Seq != first+int64(i) || m.Message != fmt.Sprint("m", m.Seq) {
				t.Fatalf("query %q: message %d is seq %d %q, want seq %d", query, i, m.Seq, m.Message, first+int64(i))
			}
		}
	})
}
