package protocol_test

// Fuzz targets for every validator of input from outside and for the
// payload decoders (docs/reliability.md). Each one states the
// rule of SPEC §4 again, independently of the code under test, and checks
// both directions: what is accepted satisfies the rule and survives a round
// trip through the wire format, and what is refused breaks the rule and
// gets a *protocol.Error with the right code, the field and a message.
// The seeds run in every go test; scripts/fuzz.sh runs them longer.

import (
	"bytes"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/protocol"
)

// checkRefusal fails t unless e is a well-formed refusal: code is one of
// codes, it names field, and it has a message.
func checkRefusal(t *testing.T, what string, e *protocol.Error, field string, codes ...string) {
	t.Helper()
	ok := false
	for _, c := range codes {
		ok = ok || e.Code == c
	}
	if !ok || e.Field != field || e.Message == "" {
		t.Fatalf("%s: refused with %+v, want code in %v, field %q and a message", what, e, codes, field)
	}
}

// roomIDRule is SPEC §4's room ID rule for the default limit.
var roomIDRule = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// FuzzCheckRoomID: a room ID is accepted exactly when it is 1–64
// characters from A–Z a–z 0–9 _ -, which is also the nanoid alphabet of
// created rooms.
func FuzzCheckRoomID(f *testing.F) {
	for _, s := range []string{"123", "a_b-C", strings.Repeat("x", 64), strings.Repeat("x", 65), "", "a b", "ä", "a/b", "a.b", "..", "%2e", "V1StGXR8_Z5jdHi6B-myT"} {
		f.Add(s)
	}
	l := protocol.DefaultLimits()
	f.Fuzz(func(t *testing.T, id string) {
		err := l.CheckRoomID("roomID", id)
		want := roomIDRule.MatchString(id)
		if (err == nil) != want {
			t.Fatalf("CheckRoomID(%q) = %v; the rule says accepted=%v", id, err, want)
		}
		if err != nil {
			checkRefusal(t, "CheckRoomID", err, "roomID", protocol.CodeBadPayload)
			return
		}
		for _, r := range id {
			if !strings.ContainsRune(protocol.RoomIDAlphabet, r) {
				t.Fatalf("accepted room ID %q holds %q, outside the nanoid alphabet", id, r)
			}
		}
	})
}

// FuzzCleanName: an accepted name comes back trimmed, 1–32 characters of
// valid UTF-8 without control characters, cleans to itself again and
// survives JSON; a refused one breaks one of those rules.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"alice", "  bob  ", strings.Repeat("é", 32), "", "   ", strings.Repeat("n", 33), "a\tb", "a\u200bb", "x\u0085y", "\xff", " \u00a0x\u3000 ", "a\u2028b", "👩‍👩‍👧"} {
		f.Add(s)
	}
	l := protocol.DefaultLimits()
	f.Fuzz(func(t *testing.T, name string) {
		got, err := l.CleanName("name", name)
		trimmed := strings.TrimSpace(name)
		n := utf8.RuneCountInString(trimmed)
		valid := trimmed != "" && utf8.ValidString(trimmed) && n <= l.MaxName && !strings.ContainsFunc(trimmed, unicode.IsControl)
		if (err == nil) != valid {
			t.Fatalf("CleanName(%q) = %q, %v; the rule says accepted=%v", name, got, err, valid)
		}
		if err != nil {
			checkRefusal(t, "CleanName", err, "name", protocol.CodeBadPayload)
			if got != "" {
				t.Fatalf("CleanName(%q) refused but returned %q", name, got)
			}
			return
		}
		if got != trimmed {
			t.Fatalf("CleanName(%q) = %q, want it trimmed: %q", name, got, trimmed)
		}
		if again, err := l.CleanName("name", got); err != nil || again != got {
			t.Fatalf("CleanName(CleanName(%q)) = %q, %v; want %q (idempotent)", name, again, err, got)
		}
		var u protocol.User
		if err := json.Unmarshal(protocol.Encode("x", "", protocol.User{Name: got}), &struct {
			Payload *protocol.User `json:"payload"`
		}{&u}); err != nil || u.Name != got {
			t.Fatalf("name %q after a JSON round trip: %q, %v", got, u.Name, err)
		}
	})
}

// FuzzCheckMessage: a message is accepted exactly when it is valid UTF-8
// with 1–4000 characters after trimming white space; an accepted one is
// delivered as sent, byte for byte, through a msg frame and a msg event.
// Empty or invalid is bad_payload, too many characters too_long.
func FuzzCheckMessage(f *testing.F) {
	for _, s := range []string{"hi", " padded ", strings.Repeat("é", 4000), " " + strings.Repeat("x", 4000) + "\n", strings.Repeat("é", 4001), "", " \t\n", "\xff", "a\x00b", "<script>", "\u2028\u2029", `"\u0000"`, "\U0010FFFF", "\ufeffx"} {
		f.Add(s)
	}
	l := protocol.DefaultLimits()
	f.Fuzz(func(t *testing.T, msg string) {
		err := l.CheckMessage("message", msg)
		trimmed := strings.TrimSpace(msg)
		switch {
		case !utf8.ValidString(msg) || trimmed == "":
			if err == nil {
				t.Fatalf("CheckMessage(%q) accepted an invalid or empty message", msg)
			}
			checkRefusal(t, "CheckMessage", err, "message", protocol.CodeBadPayload)
			return
		case utf8.RuneCountInString(trimmed) > l.MaxMessage:
			if err == nil {
				t.Fatalf("CheckMessage accepted %d characters after trimming", utf8.RuneCountInString(trimmed))
			}
			checkRefusal(t, "CheckMessage", err, "message", protocol.CodeTooLong)
			return
		}
		if err != nil {
			t.Fatalf("CheckMessage(%q) = %v; the rule accepts it", msg, err)
		}
		// Client → server: a msg frame carrying it decodes to the same text.
		env, perr := protocol.DecodeEnvelope(protocol.Encode(protocol.TypeMsg, "id", protocol.Send{Message: msg}))
		var p protocol.Send
		if perr == nil {
			perr = protocol.DecodePayload(env, &p)
		}
		if perr != nil || p.Message != msg {
			t.Fatalf("msg frame with %q decodes to %q, %v", msg, p.Message, perr)
		}
		// Server → client: the msg event delivers it as sent.
		var ev struct {
			Payload protocol.Message `json:"payload"`
		}
		if err := json.Unmarshal(protocol.Encode(protocol.TypeMsg, "", protocol.Message{Message: msg}), &ev); err != nil || ev.Payload.Message != msg {
			t.Fatalf("msg event with %q decodes to %q, %v", msg, ev.Payload.Message, err)
		}
	})
}

// eventNameRule is SPEC §4's event name rule for the default limit.
var eventNameRule = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// FuzzCheckEvent: an event name is accepted exactly when it is 1–64
// characters from A–Z a–z 0–9 _ . : -, and event data exactly when it
// takes at most 8 KiB encoded (too_long beyond). Accepted data is
// relayed as it came: an event frame built from a client's event payload
// carries the same JSON value.
func FuzzCheckEvent(f *testing.F) {
	f.Add("reaction", []byte(`{"emoji":"👍"}`))
	f.Add("a.b:c-d_e", []byte(`null`))
	f.Add("", []byte(`1`))
	f.Add("bad name", []byte(`"`+strings.Repeat("x", 8<<10)+`"`))
	f.Add(strings.Repeat("n", 65), []byte(`[]`))
	f.Add("é", []byte(`{"a":[1,2,{"b":null}]}`))
	l := protocol.DefaultLimits()
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		err := l.CheckEventName("name", name)
		if want := eventNameRule.MatchString(name); (err == nil) != want {
			t.Fatalf("CheckEventName(%q) = %v; the rule says accepted=%v", name, err, want)
		}
		if err != nil {
			checkRefusal(t, "CheckEventName", err, "name", protocol.CodeBadPayload)
		}

		// data as it arrives: inside a client's event payload.
		frame := append(append([]byte(`{"type":"event","payload":{"name":"x","data":`), data...), "}}"...)
		env, perr := protocol.DecodeEnvelope(frame)
		if perr != nil {
			return // not a JSON value: the envelope's fuzz target covers it
		}
		var p protocol.SendEvent
		if perr := protocol.DecodePayload(env, &p); perr != nil {
			t.Fatalf("event payload with data %q: %v", data, perr)
		}
		derr := l.CheckEventData("data", p.Data)
		if want := len(p.Data) <= l.MaxEventData; (derr == nil) != want {
			t.Fatalf("CheckEventData(%d bytes) = %v; the rule says accepted=%v", len(p.Data), derr, want)
		}
		if derr != nil {
			checkRefusal(t, "CheckEventData", derr, "data", protocol.CodeTooLong)
			return
		}
		var ev struct {
			Payload protocol.Event `json:"payload"`
		}
		if err := json.Unmarshal(protocol.Encode(protocol.TypeEvent, "", protocol.Event{Name: "x", Data: p.Data}), &ev); err != nil {
			t.Fatalf("event with data %q does not decode: %v", p.Data, err)
		}
		if !sameJSON(ev.Payload.Data, p.Data) {
			t.Fatalf("event data %q relayed as %q", p.Data, ev.Payload.Data)
		}
	})
}

// sameJSON reports whether a and b are the same JSON value (null for an
// absent one): the same tokens in the same order, strings compared by
// what they hold (the encoder may spell "\/" as "/", found by
// FuzzCheckEvent) and numbers by their exact text, so that a value whose
// number lost precision or whose keys moved is not the same.
func sameJSON(a, b jsontext.Value) bool {
	tokens := func(v jsontext.Value) ([]string, bool) {
		if len(v) == 0 {
			v = jsontext.Value("null")
		}
		dec := jsontext.NewDecoder(bytes.NewReader(v))
		var out []string
		for {
			tok, err := dec.ReadToken()
			if err == io.EOF {
				return out, true
			}
			if err != nil {
				return nil, false
			}
			// String is a string's content and a number's raw text.
			switch k := tok.Kind(); k {
			case '"', '0':
				out = append(out, string(k)+tok.String())
			default:
				out = append(out, string(k))
			}
		}
	}
	ta, oka := tokens(a)
	tb, okb := tokens(b)
	return oka && okb && slices.Equal(ta, tb)
}

func TestSameJSON(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{`"\/"`, `"/"`, true},
		{`{ "a" : [1, "\u0041"] }`, `{"a":[1,"A"]}`, true},
		{``, `null`, true},
		{`1.0`, `1`, false},
		{`12345678901234567890`, `12345678901234567000`, false},
		{`{"a":1,"b":2}`, `{"b":2,"a":1}`, false},
		{`[]`, `{}`, false},
		{`"a"`, `"b"`, false},
	} {
		if got := sameJSON(jsontext.Value(tc.a), jsontext.Value(tc.b)); got != tc.same {
			t.Errorf("sameJSON(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

// FuzzCheckID: an envelope id is accepted exactly when it has at most 64
// characters; a longer one is bad_envelope naming "id".
func FuzzCheckID(f *testing.F) {
	for _, s := range []string{"", "m-1", strings.Repeat("i", 64), strings.Repeat("i", 65), strings.Repeat("é", 64), strings.Repeat("é", 65), "\xff\xfe"} {
		f.Add(s)
	}
	l := protocol.DefaultLimits()
	f.Fuzz(func(t *testing.T, id string) {
		err := l.CheckID(id)
		if want := utf8.RuneCountInString(id) <= l.MaxID; (err == nil) != want {
			t.Fatalf("CheckID(%d characters) = %v; the rule says accepted=%v", utf8.RuneCountInString(id), err, want)
		}
		if err != nil {
			checkRefusal(t, "CheckID", err, "id", protocol.CodeBadEnvelope)
		}
	})
}

// FuzzDecodePayload: data as the payload of a frame, decoded into every
// client payload type. Each decode either fails with bad_payload naming a
// field (or bad_json), or gives a value that re-encodes and decodes to
// itself. Then the server's checks of that type run on it, and what they
// refuse is refused with a code and a field.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		`{"roomID":"123"}`, `{"message":"hi there"}`, `{}`, `null`,
		`{"roomID":"r","name":"alice","since":41}`, `{"roomID":1}`, `{"since":-0.5}`, `{"since":99999999999999999999}`,
		`{"since":-1}`, `{"since":1e3}`, `{"since":"1"}`, `{"message":null}`, `{"message":{}}`,
		`{"roomID":"r","after":0,"limit":200}`, `{"after":null}`, `{"limit":201}`, `{"limit":-1}`,
		`{"name":"reaction","data":{"x":[1,2]},"roomID":"r"}`, `{"name":"n","data":null}`,
		`{"RoomID":"case"}`, `{"roomID":"a","roomID":"b"}`, `{"message":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	l := protocol.DefaultLimits()
	f.Fuzz(func(t *testing.T, data []byte) {
		frame := append(append([]byte(`{"type":"x","payload":`), data...), '}')
		env, perr := protocol.DecodeEnvelope(frame)
		if perr != nil {
			return // the envelope's fuzz target covers this
		}
		for _, v := range []any{new(protocol.Join), new(protocol.Send), new(protocol.RoomRef), new(protocol.HistoryRequest), new(protocol.SendEvent)} {
			if perr := protocol.DecodePayload(env, v); perr != nil {
				if perr.Code == protocol.CodeBadJSON {
					checkRefusal(t, "DecodePayload", perr, "", protocol.CodeBadJSON)
					continue
				}
				if perr.Field == "" {
					t.Fatalf("DecodePayload(%s) into %T: %+v names no field", data, v, perr)
				}
				checkRefusal(t, "DecodePayload", perr, perr.Field, protocol.CodeBadPayload)
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("re-encoding %+v: %v", v, err)
			}
			again := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if perr := protocol.DecodePayload(protocol.Envelope{Type: "x", Payload: b}, again); perr != nil {
				t.Fatalf("%T %s re-encoded as %s does not decode: %v", v, data, b, perr)
			}
			if e, ok := v.(*protocol.SendEvent); ok {
				// Data is kept raw; compare it as JSON.
				a := again.(*protocol.SendEvent)
				if !sameJSON(e.Data, a.Data) {
					t.Fatalf("SendEvent data %q round trips to %q", e.Data, a.Data)
				}
				e.Data, a.Data = nil, nil
			}
			if !reflect.DeepEqual(v, again) {
				t.Fatalf("%T from %s round trips to %+v, want %+v", v, data, again, v)
			}
			checkPayload(t, l, v)
		}
	})
}

// checkPayload runs the server's checks of a decoded payload (as
// internal/server's dispatch does) and fails t if a refusal is not a
// well-formed bad_payload or too_long.
func checkPayload(t *testing.T, l protocol.Limits, v any) {
	t.Helper()
	var errs []*protocol.Error
	optionalRoom := func(id string) {
		if id != "" {
			errs = append(errs, l.CheckRoomID("roomID", id))
		}
	}
	switch p := v.(type) {
	case *protocol.Join:
		errs = append(errs, l.CheckRoomID("roomID", p.RoomID))
		if p.Name != "" {
			_, err := l.CleanName("name", p.Name)
			errs = append(errs, err)
		}
	case *protocol.Send:
		optionalRoom(p.RoomID)
		errs = append(errs, l.CheckMessage("message", p.Message))
	case *protocol.RoomRef:
		optionalRoom(p.RoomID)
	case *protocol.HistoryRequest:
		optionalRoom(p.RoomID)
		err := l.CheckPageLimit("limit", p.Limit)
		if want := p.Limit >= 0 && p.Limit <= l.MaxPage; (err == nil) != want {
			t.Fatalf("CheckPageLimit(%d) = %v; the rule says accepted=%v", p.Limit, err, want)
		}
		errs = append(errs, err)
	case *protocol.SendEvent:
		optionalRoom(p.RoomID)
		errs = append(errs, l.CheckEventName("name", p.Name), l.CheckEventData("data", p.Data))
	}
	for _, err := range errs {
		if err != nil {
			checkRefusal(t, "check", err, err.Field, protocol.CodeBadPayload, protocol.CodeTooLong)
			if err.Field == "" {
				t.Fatalf("%+v names no field", err)
			}
		}
	}
}
