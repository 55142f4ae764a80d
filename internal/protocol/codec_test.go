package protocol_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/protocol"
)

// frames is the decoder's table: valid frames with what they decode to, and
// bad ones with the code they get. It also seeds the fuzzer.
var frames = []struct {
	name, in      string
	typ, id, code string
}{
	{"seed join", `{"type":"join","payload":{"roomID":"123"}}`, "join", "", ""},
	{"seed msg", `{"type":"msg","payload":{"message":"hi there"}}`, "msg", "", ""},
	{"id", `{"type":"ping","id":"p-1"}`, "ping", "p-1", ""},
	{"null payload", `{"type":"ping","payload":null}`, "ping", "", ""},
	{"unknown field", `{"type":"ping","extra":[1,2,{"a":1}]}`, "ping", "", ""},
	{"whitespace", " \n{ \"type\" : \"ping\" }\t", "ping", "", ""},
	{"unicode", `{"type":"msg","payload":{"message":"héllo 👋"}}`, "msg", "", ""},
	{"not json", `hello`, "", "", protocol.CodeBadJSON},
	{"empty", ``, "", "", protocol.CodeBadJSON},
	{"trailing garbage", `{"type":"ping"}x`, "", "", protocol.CodeBadJSON},
	{"duplicate type", `{"type":"ping","type":"join"}`, "", "", protocol.CodeBadJSON},
	{"duplicate nested", `{"type":"x","payload":{"a":{"b":1,"b":2}}}`, "", "", protocol.CodeBadJSON},
	{"duplicate escaped", `{"type":"ping","t\u0079pe":"join"}`, "", "", protocol.CodeBadJSON},
	{"array", `[]`, "", "", protocol.CodeBadEnvelope},
	{"number", `42`, "", "", protocol.CodeBadEnvelope},
	{"no type", `{}`, "", "", protocol.CodeBadEnvelope},
	{"type case", `{"TYPE":"ping"}`, "", "", protocol.CodeBadEnvelope},
	{"empty type", `{"type":""}`, "", "", protocol.CodeBadEnvelope},
	{"type object", `{"type":{}}`, "", "", protocol.CodeBadEnvelope},
	{"id number", `{"type":"ping","id":3}`, "", "", protocol.CodeBadEnvelope},
	{"payload array", `{"type":"ping","payload":[]}`, "", "", protocol.CodeBadEnvelope},
	{"payload string", `{"type":"ping","payload":"x"}`, "", "", protocol.CodeBadEnvelope},
	{"deep nesting", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), "", "", protocol.CodeBadEnvelope},
	{"deep nesting in payload", `{"type":"ping","payload":{"a":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`, "", "", protocol.CodeBadJSON},
}

func TestDecodeEnvelope(t *testing.T) {
	for _, tc := range frames {
		t.Run(tc.name, func(t *testing.T) {
			env, err := protocol.DecodeEnvelope([]byte(tc.in))
			if tc.code != "" {
				if err == nil || err.Code != tc.code {
					t.Fatalf("DecodeEnvelope(%.40q) = %+v, %v; want code %q", tc.in, env, err, tc.code)
				}
				return
			}
			if err != nil || env.Type != tc.typ || env.ID != tc.id {
				t.Fatalf("DecodeEnvelope(%.40q) = %+v, %v; want type %q id %q", tc.in, env, err, tc.typ, tc.id)
			}
		})
	}
}

func TestDecodePayloadNamesField(t *testing.T) {
	cases := []struct{ in, field, code string }{
		{`{"type":"join","payload":{"roomID":1}}`, "roomID", protocol.CodeBadPayload},
		{`{"type":"join","payload":{"since":-0.5}}`, "since", protocol.CodeBadPayload},
		{`{"type":"join","payload":{"since":99999999999999999999}}`, "since", protocol.CodeBadPayload},
		{`{"type":"msg","payload":{"message":null}}`, "", ""},
		{`{"type":"msg","payload":{"message":{}}}`, "message", protocol.CodeBadPayload},
	}
	for _, tc := range cases {
		env, err := protocol.DecodeEnvelope([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		var v struct {
			protocol.Join
			Message *string `json:"message"`
		}
		perr := protocol.DecodePayload(env, &v)
		if tc.code == "" {
			if perr != nil {
				t.Errorf("%s: got %v, want no error", tc.in, perr)
			}
			continue
		}
		if perr == nil || perr.Code != tc.code || perr.Field != tc.field {
			t.Errorf("%s: got %+v, want code %q field %q", tc.in, perr, tc.code, tc.field)
		}
	}
}

func TestLimits(t *testing.T) {
	l := protocol.DefaultLimits()
	for id, ok := range map[string]bool{
		"123": true, "a_b-C": true, strings.Repeat("x", 64): true,
		"": false, strings.Repeat("x", 65): false, "a b": false, "ä": false, "a/b": false, "a.b": false,
	} {
		if got := l.CheckRoomID("roomID", id) == nil; got != ok {
			t.Errorf("CheckRoomID(%q) ok = %v, want %v", id, got, ok)
		}
	}
	for name, want := range map[string]string{
		"alice": "alice", "  bob  ": "bob", strings.Repeat("é", 32): strings.Repeat("é", 32),
		"": "", "   ": "", strings.Repeat("n", 33): "", "a\tb": "", "a\u200bb": "a\u200bb", "x\u0085y": "",
	} {
		got, err := l.CleanName("name", name)
		if (want == "") != (err != nil) || got != want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	cases := []struct{ msg, code string }{
		{"hi", ""},
		{" padded ", ""},
		{strings.Repeat("é", 4000), ""},
		{" " + strings.Repeat("x", 4000) + "\n", ""},
		{strings.Repeat("é", 4001), protocol.CodeTooLong},
		{"", protocol.CodeBadPayload},
		{" \t\n", protocol.CodeBadPayload},
		{"\xff", protocol.CodeBadPayload},
	}
	for _, tc := range cases {
		err := l.CheckMessage("message", tc.msg)
		if got := ""; err != nil {
			got = err.Code
			if got != tc.code {
				t.Errorf("CheckMessage(%.20q) = %v, want %q", tc.msg, err, tc.code)
			}
		} else if tc.code != "" {
			t.Errorf("CheckMessage(%.20q) = nil, want %q", tc.msg, tc.code)
		}
	}
}

func TestSplitBatch(t *testing.T) {
	for in, want := range map[string][]string{
		`{"a":1}`:                {`{"a":1}`},
		"{\"a\":1}\n":            {`{"a":1}`},
		"{\"a\":1}\n{\"b\":2}\n": {`{"a":1}`, `{"b":2}`},
		"{\"a\":1}\n\n{\"b\":2}": {`{"a":1}`, `{"b":2}`},
		"":                       nil,
	} {
		var got []string
		for _, b := range protocol.SplitBatch([]byte(in)) {
			got = append(got, string(b))
		}
		if !slices.Equal(got, want) {
			t.Errorf("SplitBatch(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzDecodeEnvelope: the decoder never panics, and it returns either an
// envelope that re-encodes and decodes to the same thing, or an error with
// a known code and a message.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, tc := range frames {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := protocol.DecodeEnvelope(data)
		if err != nil {
			if !slices.Contains(protocol.ErrorCodes, err.Code) || err.Message == "" {
				t.Fatalf("DecodeEnvelope(%q): error %+v has an unknown code or no message", data, err)
			}
			return
		}
		if env.Type == "" {
			t.Fatalf("DecodeEnvelope(%q) accepted an envelope without type", data)
		}
		b, merr := json.Marshal(env)
		if merr != nil {
			t.Fatalf("re-encoding %+v: %v", env, merr)
		}
		again, err := protocol.DecodeEnvelope(b)
		// An empty payload object and no payload mean the same.
		if err != nil || again.Type != env.Type || again.ID != env.ID || payload(again) != payload(env) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", data, again, err, env)
		}
		// Every payload type decodes or fails with a field-naming error.
		for _, v := range []any{new(protocol.Join), new(protocol.Send), new(protocol.RoomRef)} {
			if perr := protocol.DecodePayload(env, v); perr != nil && perr.Code != protocol.CodeBadPayload && perr.Code != protocol.CodeBadJSON {
				t.Fatalf("DecodePayload(%q) into %T: %+v", env.Payload, v, perr)
			}
		}
	})
}

func payload(env protocol.Envelope) string {
	if len(env.Payload) == 0 {
		return "{}"
	}
	return string(env.Payload)
}

// TestSendEventKeepsEmptyData: a client's event payload carries every JSON
// value of data as it is, the empty ones ("", {}, []) included; only a nil
// data is left out. (FuzzDecodePayload found "" turned into no data, so
// that the members got null.)
func TestSendEventKeepsEmptyData(t *testing.T) {
	for _, data := range []string{`""`, `{}`, `[]`, `0`, `false`, `null`, `{"a":[]}`} {
		b, err := json.Marshal(protocol.SendEvent{Name: "n", Data: jsontext.Value(data)})
		if err != nil {
			t.Fatal(err)
		}
		var got protocol.SendEvent
		if err := json.Unmarshal(b, &got); err != nil || string(got.Data) != data {
			t.Errorf("data %s encoded as %s decodes to %q, %v; want %s", data, b, got.Data, err, data)
		}
	}
	if b, _ := json.Marshal(protocol.SendEvent{Name: "n"}); strings.Contains(string(b), "data") {
		t.Errorf("nil data encoded as %s, want no data", b)
	}
}
