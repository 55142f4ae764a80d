package protocol_test

// These tests keep api/asyncapi.yaml, api/openapi.yaml and docs/protocol.md
// honest about internal/protocol: the message types, the payload fields, the
// error codes, the close reasons and every example are checked against the Go
// definitions, so that the docs cannot show a type, a field or a code that
// the code does not have, nor leave one out.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/roomchat/roomchat/internal/identity"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/server"
)

const (
	asyncAPIFile = "../../api/asyncapi.yaml"
	openAPIFile  = "../../api/openapi.yaml"
	protocolDoc  = "../../docs/protocol.md"
)

// clientPayloads and serverPayloads say which Go type each frame type's
// payload decodes into, per direction, as internal/server's dispatch and
// internal/room use them. nil means the frame has no payload (server) or
// one that is not read (client). TestPayloadTables ties their keys to
// protocol.ClientTypes and protocol.ServerTypes, so a new frame type fails
// here until it is described.
var (
	clientPayloads = map[string]reflect.Type{
		protocol.TypeJoin:    reflect.TypeFor[protocol.Join](),
		protocol.TypeMsg:     reflect.TypeFor[protocol.Send](),
		protocol.TypeLeave:   reflect.TypeFor[protocol.RoomRef](),
		protocol.TypeCreate:  reflect.TypeFor[protocol.Create](),
		protocol.TypeTyping:  reflect.TypeFor[protocol.RoomRef](),
		protocol.TypePing:    nil,
		protocol.TypeHistory: reflect.TypeFor[protocol.HistoryRequest](),
		protocol.TypeEvent:   reflect.TypeFor[protocol.SendEvent](),
		protocol.TypeAuth:    reflect.TypeFor[protocol.Auth](),
		// Moderation (SPEC §11): kick, ban, unban, mute and unmute share
		// one payload.
		protocol.TypeRedact:    reflect.TypeFor[protocol.Redact](),
		protocol.TypeKick:      reflect.TypeFor[protocol.Moderate](),
		protocol.TypeBan:       reflect.TypeFor[protocol.Moderate](),
		protocol.TypeUnban:     reflect.TypeFor[protocol.Moderate](),
		protocol.TypeMute:      reflect.TypeFor[protocol.Moderate](),
		protocol.TypeUnmute:    reflect.TypeFor[protocol.Moderate](),
		protocol.TypeConfigure: reflect.TypeFor[protocol.Configure](),
	}
	serverPayloads = map[string]reflect.Type{
		protocol.TypeWelcome:    reflect.TypeFor[protocol.Welcome](),
		protocol.TypeJoined:     reflect.TypeFor[protocol.Joined](),
		protocol.TypeMsg:        reflect.TypeFor[protocol.Message](),
		protocol.TypePresence:   reflect.TypeFor[protocol.Presence](),
		protocol.TypeTyping:     reflect.TypeFor[protocol.Typing](),
		protocol.TypeLeft:       reflect.TypeFor[protocol.Left](),
		protocol.TypeCreated:    reflect.TypeFor[protocol.Created](),
		protocol.TypePong:       nil,
		protocol.TypeAck:        reflect.TypeFor[protocol.Ack](),
		protocol.TypeError:      reflect.TypeFor[protocol.Error](),
		protocol.TypeHistory:    reflect.TypeFor[protocol.History](),
		protocol.TypeEvent:      reflect.TypeFor[protocol.Event](),
		protocol.TypeResume:     reflect.TypeFor[protocol.Resume](),
		protocol.TypeAuthed:     reflect.TypeFor[protocol.Authed](),
		protocol.TypeDone:       reflect.TypeFor[protocol.Done](),
		protocol.TypeKicked:     reflect.TypeFor[protocol.Kicked](),
		protocol.TypeMuted:      reflect.TypeFor[protocol.Muted](),
		protocol.TypeConfigured: reflect.TypeFor[protocol.Configured](),
	}
)

// goTypes resolves the x-go-type names of api/asyncapi.yaml.
var goTypes = map[string]reflect.Type{}

func init() {
	for _, m := range []map[string]reflect.Type{clientPayloads, serverPayloads} {
		for _, t := range m {
			if t != nil {
				goTypes[t.Name()] = t
			}
		}
	}
	for _, t := range []reflect.Type{reflect.TypeFor[protocol.User](), reflect.TypeFor[protocol.Limits](), reflect.TypeFor[protocol.Redaction]()} {
		goTypes[t.Name()] = t
	}
}

func TestPayloadTables(t *testing.T) {
	if got, want := sortedKeys(clientPayloads), sorted(protocol.ClientTypes); !slices.Equal(got, want) {
		t.Errorf("clientPayloads covers %v, protocol.ClientTypes is %v: describe the new type in this test, api/asyncapi.yaml and docs/protocol.md", got, want)
	}
	if got, want := sortedKeys(serverPayloads), sorted(protocol.ServerTypes); !slices.Equal(got, want) {
		t.Errorf("serverPayloads covers %v, protocol.ServerTypes is %v: describe the new type in this test, api/asyncapi.yaml and docs/protocol.md", got, want)
	}
}

// ---- api/asyncapi.yaml ------------------------------------------------------

// apiMessage is one message of api/asyncapi.yaml.
type apiMessage struct {
	key     string         // its key under components/messages
	typ     string         // its envelope's type const
	client  bool           // client → server (a receive operation)
	payload reflect.Type   // from clientPayloads or serverPayloads
	frame   map[string]any // its payload schema (the envelope)
	node    map[string]any // the message object
}

// asyncMessages returns every message the operations of api/asyncapi.yaml
// use, with its direction, and fails for messages no operation uses.
func asyncMessages(t *testing.T, doc map[string]any) []apiMessage {
	t.Helper()
	var out []apiMessage
	used := map[string]bool{}
	ops := mapAt(t, doc, "operations")
	for _, name := range sortedKeys(ops) {
		op := asMap(t, ops[name], "operations/"+name)
		action, _ := op["action"].(string)
		if action != "receive" && action != "send" {
			t.Errorf("operation %s: action %q, want receive or send", name, action)
			continue
		}
		for i, ref := range asList(t, op["messages"], "operations/"+name+"/messages") {
			msgPath, msg := resolve(t, doc, ref, fmt.Sprintf("operations/%s/messages/%d", name, i))
			key := msgPath[strings.LastIndex(msgPath, "/")+1:]
			frame := schemaAt(t, doc, msg["payload"], msgPath+"/payload")
			typ, _ := getMap(frame, "properties", "type")["const"].(string)
			if typ == "" {
				t.Errorf("%s: the payload schema needs properties.type.const", msgPath)
				continue
			}
			if n, _ := msg["name"].(string); n != typ {
				t.Errorf("%s: name %q, but its type is %q", msgPath, n, typ)
			}
			m := apiMessage{key: key, typ: typ, client: action == "receive", frame: frame, node: msg}
			var ok bool
			if m.client {
				m.payload, ok = clientPayloads[typ]
			} else {
				m.payload, ok = serverPayloads[typ]
			}
			if !ok {
				t.Errorf("%s: a %s operation carries type %q, which the code does not have (protocol.%s)", msgPath, action, typ, direction(m.client))
				continue
			}
			used[key] = true
			out = append(out, m)
		}
	}
	for key := range mapAt(t, doc, "components", "messages") {
		if !used[key] {
			t.Errorf("components/messages/%s: no operation uses it", key)
		}
	}
	return out
}

func direction(client bool) string {
	if client {
		return "ClientTypes"
	}
	return "ServerTypes"
}

func TestAsyncAPIMessageTypes(t *testing.T) {
	doc := loadYAML(t, asyncAPIFile)
	got := map[bool]map[string]bool{true: {}, false: {}}
	for _, m := range asyncMessages(t, doc) {
		got[m.client][m.typ] = true
	}
	for client, types := range map[bool][]string{true: protocol.ClientTypes, false: protocol.ServerTypes} {
		for _, typ := range types {
			if !got[client][typ] {
				t.Errorf("protocol.%s has %q, but no %s operation of %s carries it", direction(client), typ, map[bool]string{true: "receive", false: "send"}[client], asyncAPIFile)
			}
		}
	}
	// Every channel message is one of the components, and vice versa.
	chMsgs := mapAt(t, doc, "channels", "ws", "messages")
	comps := mapAt(t, doc, "components", "messages")
	for key, ref := range chMsgs {
		p, _ := resolve(t, doc, ref, "channels/ws/messages/"+key)
		if p != "components/messages/"+key {
			t.Errorf("channels/ws/messages/%s refers to %s", key, p)
		}
	}
	for key := range comps {
		if _, ok := chMsgs[key]; !ok {
			t.Errorf("components/messages/%s is not in channels/ws/messages", key)
		}
	}
}

func TestAsyncAPIPayloadSchemas(t *testing.T) {
	doc := loadYAML(t, asyncAPIFile)
	for _, m := range asyncMessages(t, doc) {
		where := "components/messages/" + m.key + "/payload"
		props := getMap(m.frame, "properties")
		for name := range props {
			if name != "type" && name != "id" && name != "payload" {
				t.Errorf("%s: envelope property %q; the envelope has only type, id and payload", where, name)
			}
		}
		p, hasPayload := props["payload"]
		switch {
		case m.payload == nil && !m.client:
			if hasPayload {
				t.Errorf("%s: the server sends %s without a payload, but the schema has one", where, m.typ)
			}
		case m.payload == nil:
			if hasPayload {
				if s := schemaAt(t, doc, p, where+"/properties/payload"); len(getMap(s, "properties")) > 0 {
					t.Errorf("%s: the server does not read a %s payload, but the schema describes properties", where, m.typ)
				}
			}
		case !hasPayload:
			t.Errorf("%s: no payload schema; want one for %s", where, m.payload)
		default:
			s := schemaAt(t, doc, p, where+"/properties/payload")
			if s["x-go-type"] != m.payload.Name() {
				t.Errorf("%s: payload schema has x-go-type %v, want %s", where, s["x-go-type"], m.payload.Name())
			}
			compareSchema(t, doc, s, m.payload, where+"/properties/payload")
		}
	}
	// Every schema that names a Go type matches it, even if no message uses it.
	schemas := mapAt(t, doc, "components", "schemas")
	for _, name := range sortedKeys(schemas) {
		s := asMap(t, schemas[name], "components/schemas/"+name)
		gt, ok := s["x-go-type"].(string)
		if !ok {
			continue
		}
		typ, ok := goTypes[gt]
		if !ok {
			t.Errorf("components/schemas/%s: x-go-type %q is not a payload type of internal/protocol", name, gt)
			continue
		}
		compareSchema(t, doc, s, typ, "components/schemas/"+name)
	}
}

// compareSchema checks that schema describes Go type typ: the same JSON
// kind, for a struct exactly its json field names with every field that is
// always sent (no omitempty) required, recursively.
func compareSchema(t *testing.T, doc, schema map[string]any, typ reflect.Type, where string) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if ref, ok := schema["$ref"]; ok {
		where, schema = resolve(t, doc, ref, where)
	}
	kind, _ := schema["type"].(string)
	if typ == reflect.TypeFor[jsontext.Value]() {
		// Any JSON value (a custom event's data): the schema must not
		// narrow it to one type.
		if _, ok := schema["type"]; ok {
			t.Errorf("%s: type %v, but Go %s holds any JSON value: leave type out", where, schema["type"], typ)
		}
		return
	}
	want := ""
	switch {
	case typ == reflect.TypeFor[time.Time]():
		want = "string"
	case typ.Kind() == reflect.Struct:
		want = "object"
	case typ.Kind() == reflect.Slice:
		want = "array"
	case typ.Kind() == reflect.String:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		want = "integer"
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		want = "number"
	default:
		t.Errorf("%s: Go type %s has no JSON Schema mapping in this test", where, typ)
		return
	}
	if kind != want {
		t.Errorf("%s: type %q, want %q for Go %s", where, kind, want, typ)
		return
	}
	switch want {
	case "array":
		items, ok := schema["items"]
		if !ok {
			t.Errorf("%s: array without items", where)
			return
		}
		compareSchema(t, doc, schemaAt(t, doc, items, where+"/items"), typ.Elem(), where+"/items")
	case "object":
		if typ == reflect.TypeFor[time.Time]() {
			return
		}
		if gt, ok := schema["x-go-type"]; ok && gt != typ.Name() {
			t.Errorf("%s: x-go-type %v, want %s", where, gt, typ.Name())
		}
		fields := jsonFields(typ)
		props := getMap(schema, "properties")
		for _, name := range sortedKeys(props) {
			if _, ok := fields[name]; !ok {
				t.Errorf("%s: property %q is not a json field of protocol.%s (fields: %v)", where, name, typ.Name(), sortedKeys(fields))
			}
		}
		var required []string
		for _, r := range asListOrNil(schema["required"]) {
			s, _ := r.(string)
			required = append(required, s)
		}
		for _, name := range sortedKeys(fields) {
			f := fields[name]
			p, ok := props[name]
			if !ok {
				t.Errorf("%s: protocol.%s has json field %q, but the schema lacks it", where, typ.Name(), name)
				continue
			}
			if req := slices.Contains(required, name); req == f.omitempty {
				t.Errorf("%s: property %q required=%v, but its Go field is %s", where, name, req, map[bool]string{true: "omitempty (not always sent)", false: "always sent"}[f.omitempty])
			}
			compareSchema(t, doc, schemaAt(t, doc, p, where+"/properties/"+name), f.typ, where+"/properties/"+name)
		}
	}
}

type jsonField struct {
	typ       reflect.Type
	omitempty bool
}

// jsonFields returns the JSON member names of struct type typ.
func jsonFields(typ reflect.Type) map[string]jsonField {
	out := map[string]jsonField{}
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag, hasTag := f.Tag.Lookup("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" && opts == "" {
			continue
		}
		if !hasTag || name == "" {
			name = f.Name
		}
		omit := false
		for _, o := range strings.Split(opts, ",") {
			if o == "omitempty" || o == "omitzero" {
				omit = true
			}
		}
		out[name] = jsonField{typ: f.Type, omitempty: omit}
	}
	return out
}

// ---- error codes ------------------------------------------------------------

func TestErrorCodesDocumented(t *testing.T) {
	want := sorted(protocol.ErrorCodes)

	doc := loadYAML(t, asyncAPIFile)
	errSchema := mapAt(t, doc, "components", "schemas", "Error")
	_, code := resolve(t, doc, getMap(errSchema, "properties", "code")["$ref"], "components/schemas/Error/properties/code")
	var enum []string
	for _, v := range asListOrNil(code["enum"]) {
		s, _ := v.(string)
		enum = append(enum, s)
	}
	if got := sorted(enum); !slices.Equal(got, want) {
		t.Errorf("%s: error code enum %v, protocol.ErrorCodes %v\nmissing: %v\nnot in the code: %v", asyncAPIFile, got, want, minus(want, got), minus(got, want))
	}
	if got := sortedKeys(getMap(code, "x-enum-descriptions")); !slices.Equal(got, want) {
		t.Errorf("%s: x-enum-descriptions cover %v, want %v", asyncAPIFile, got, want)
	}

	rows := mdTable(t, protocolDoc, "## Errors")
	var documented []string
	for _, r := range rows {
		documented = append(documented, strings.Trim(r[0], "`"))
	}
	if got := sorted(documented); !slices.Equal(got, want) {
		t.Errorf("%s: the errors table lists %v, protocol.ErrorCodes %v\nmissing: %v\nnot in the code: %v", protocolDoc, got, want, minus(want, got), minus(got, want))
	}
}

// ---- close codes ------------------------------------------------------------

// closeReasons are the close codes the server sends (internal/server) with
// their reasons, several for a code that has several; "" where the
// WebSocket library writes the reason.
var closeReasons = func() map[int][]string {
	m := map[int][]string{}
	for _, c := range protocol.Closes {
		reason := c.Reason
		if c == protocol.CloseTooBig {
			reason = ""
		}
		m[c.Code] = append(m[c.Code], reason)
	}
	for _, r := range m {
		slices.Sort(r)
	}
	return m
}()

func TestCloseCodesDocumented(t *testing.T) {
	check := func(where string, got map[int][]string) {
		t.Helper()
		if g, w := sortedKeys(got), sortedKeys(closeReasons); !slices.Equal(g, w) {
			t.Errorf("%s: close codes %v, want %v", where, g, w)
		}
		for code, reasons := range got {
			want, ok := closeReasons[code]
			if !ok {
				continue
			}
			slices.Sort(reasons)
			if len(want) == 1 && want[0] == "" {
				continue // the library's reason: any text
			}
			if !slices.Equal(reasons, want) {
				t.Errorf("%s: close %d with reasons %q, the code sends %q", where, code, reasons, want)
			}
		}
	}

	doc := loadYAML(t, asyncAPIFile)
	got := map[int][]string{}
	for i, e := range asList(t, mapAt(t, doc, "channels", "ws")["x-close-codes"], "channels/ws/x-close-codes") {
		m := asMap(t, e, fmt.Sprintf("channels/ws/x-close-codes/%d", i))
		code, _ := m["code"].(int)
		reason, _ := m["reason"].(string)
		got[code] = append(got[code], reason)
	}
	check(asyncAPIFile+" x-close-codes", got)

	got = map[int][]string{}
	for _, r := range mdTable(t, protocolDoc, "## Close codes") {
		code, err := strconv.Atoi(r[0])
		if err != nil || len(r) < 2 {
			t.Errorf("%s: close codes row %q", protocolDoc, r)
			continue
		}
		got[code] = append(got[code], strings.Trim(r[1], "`"))
	}
	check(protocolDoc+" close codes table", got)
}

// ---- examples ---------------------------------------------------------------

func TestAsyncAPIExamples(t *testing.T) {
	doc := loadYAML(t, asyncAPIFile)
	for _, m := range asyncMessages(t, doc) {
		examples := asListOrNil(m.node["examples"])
		if len(examples) == 0 {
			t.Errorf("components/messages/%s: no example", m.key)
		}
		for i, ex := range examples {
			where := fmt.Sprintf("components/messages/%s/examples/%d", m.key, i)
			frame, err := json.Marshal(asMap(t, ex, where)["payload"], json.Deterministic(true))
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			env, perr := protocol.DecodeEnvelope(frame)
			if perr != nil {
				t.Errorf("%s: %s: DecodeEnvelope: %v", where, frame, perr)
				continue
			}
			if env.Type != m.typ {
				t.Errorf("%s: example of type %q in message %q", where, env.Type, m.typ)
				continue
			}
			if err := checkFrame(env, m.client); err != nil {
				t.Errorf("%s: %s\n%v", where, frame, err)
			}
		}
	}
}

func TestProtocolDocExamples(t *testing.T) {
	b, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, blk := range fencedBlocks(string(b), "json") {
		dec := jsontext.NewDecoder(strings.NewReader(blk.text))
		for {
			v, err := dec.ReadValue()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Errorf("%s:%d: a json block that is not JSON: %v", protocolDoc, blk.line, err)
				break
			}
			n++
			where := fmt.Sprintf("%s:%d", protocolDoc, blk.line)
			frame := bytes.Clone(v)
			env, perr := protocol.DecodeEnvelope(frame)
			if perr != nil {
				t.Errorf("%s: %s: DecodeEnvelope: %v", where, frame, perr)
				continue
			}
			// A type both sides use (msg, typing) must fit one of them.
			var errs []error
			for _, client := range []bool{true, false} {
				if slices.Contains(map[bool][]string{true: protocol.ClientTypes, false: protocol.ServerTypes}[client], env.Type) {
					err := checkFrame(env, client)
					if err == nil {
						errs = nil
						break
					}
					errs = append(errs, fmt.Errorf("as %s: %w", direction(client), err))
				}
			}
			if len(errs) == 0 && !slices.Contains(protocol.ClientTypes, env.Type) && !slices.Contains(protocol.ServerTypes, env.Type) {
				errs = append(errs, fmt.Errorf("type %q is neither a client nor a server type", env.Type))
			}
			if len(errs) > 0 {
				t.Errorf("%s: %s\n%v", where, frame, errs)
			}
		}
	}
	if n < len(protocol.ClientTypes)+len(protocol.ServerTypes) {
		t.Errorf("%s: only %d JSON frames; want at least one per frame type", protocolDoc, n)
	}
}

// checkFrame checks one decoded example frame: its payload decodes into the
// Go type with unknown members rejected; a client frame passes the server's
// checks; a server frame is exactly what protocol.Encode would send.
func checkFrame(env protocol.Envelope, client bool) error {
	typ := serverPayloads[env.Type]
	if client {
		typ = clientPayloads[env.Type]
	}
	var v any
	if typ == nil {
		if !client && len(env.Payload) > 0 {
			return fmt.Errorf("%s has no payload, the example has %s", env.Type, env.Payload)
		}
		// The client payload of ping is not read: only {} fits.
		v = new(struct{})
	} else {
		v = reflect.New(typ).Interface()
	}
	if len(env.Payload) > 0 {
		if err := json.Unmarshal(env.Payload, v, json.RejectUnknownMembers(true)); err != nil {
			return fmt.Errorf("payload does not decode into %T: %v", v, err)
		}
	}
	if client {
		return checkClient(env.Type, v)
	}
	if typ != nil {
		if err := checkServer(v); err != nil {
			return err
		}
		v = reflect.ValueOf(v).Elem().Interface()
	} else {
		v = nil
	}
	frame, err := json.Marshal(env)
	if err != nil {
		return err
	}
	if diff := jsonDiff(protocol.Encode(env.Type, env.ID, v), frame); diff != "" {
		return fmt.Errorf("not what the server sends (-server +example):\n%s", diff)
	}
	return nil
}

// checkClient runs the checks internal/server applies to a client frame.
func checkClient(typ string, v any) error {
	lim := protocol.DefaultLimits()
	var perr *protocol.Error
	switch p := v.(type) {
	case *protocol.Join:
		perr = lim.CheckRoomID("roomID", p.RoomID)
		if perr == nil && p.Name != "" {
			_, perr = lim.CleanName("name", p.Name)
		}
		if perr == nil && p.Since != nil && *p.Since < 0 {
			perr = protocol.FieldErrorf(protocol.CodeBadPayload, "since", "negative")
		}
	case *protocol.Send:
		if p.RoomID != "" {
			perr = lim.CheckRoomID("roomID", p.RoomID)
		}
		if perr == nil {
			perr = lim.CheckMessage("message", p.Message)
		}
	case *protocol.RoomRef:
		if p.RoomID != "" {
			perr = lim.CheckRoomID("roomID", p.RoomID)
		}
	case *protocol.HistoryRequest:
		if p.RoomID != "" {
			perr = lim.CheckRoomID("roomID", p.RoomID)
		}
		if perr == nil && (p.After == nil || *p.After < 0) {
			perr = protocol.FieldErrorf(protocol.CodeBadPayload, "after", "missing or negative")
		}
		if perr == nil {
			perr = lim.CheckPageLimit("limit", p.Limit)
		}
	case *protocol.Create:
		if p.Namespace != "" && !protocol.CheckNamespace(p.Namespace) {
			perr = protocol.FieldErrorf(protocol.CodeBadPayload, "namespace", "not a namespace name")
		}
	case *protocol.Auth:
		if p.Token == "" || len(p.Token) > identity.MaxToken {
			perr = protocol.Errorf(protocol.CodeUnauthorized, "a token of %d bytes", len(p.Token))
		}
	case *protocol.SendEvent:
		if p.RoomID != "" {
			perr = lim.CheckRoomID("roomID", p.RoomID)
		}
		if perr == nil {
			perr = lim.CheckEventName("name", p.Name)
		}
		if perr == nil {
			perr = lim.CheckEventData("data", p.Data)
		}
	// The moderation frames (SPEC §11), as internal/server's
	// checkModeration and until check them.
	case *protocol.Redact:
		perr = lim.CheckRoomID("roomID", p.RoomID)
		if perr == nil && p.Seq < 1 {
			perr = protocol.FieldErrorf(protocol.CodeBadPayload, "seq", "below 1")
		}
		if perr == nil && utf8.RuneCountInString(p.Reason) > 200 {
			perr = protocol.FieldErrorf(protocol.CodeTooLong, "reason", "over 200 characters")
		}
	case *protocol.Moderate:
		perr = lim.CheckRoomID("roomID", p.RoomID)
		if n := utf8.RuneCountInString(p.UserID); perr == nil && (n == 0 || n > 64) {
			perr = protocol.FieldErrorf(protocol.CodeBadPayload, "userID", "not 1 to 64 characters")
		}
		if perr == nil && utf8.RuneCountInString(p.Reason) > 200 {
			perr = protocol.FieldErrorf(protocol.CodeTooLong, "reason", "over 200 characters")
		}
		if perr == nil && p.For != "" {
			if d, err := time.ParseDuration(p.For); err != nil || d <= 0 || d > 10*365*24*time.Hour {
				perr = protocol.FieldErrorf(protocol.CodeBadPayload, "for", "not a duration above 0 and at most ten years")
			}
		}
	case *protocol.Configure:
		perr = lim.CheckRoomID("roomID", p.RoomID)
		if perr == nil && p.Post != "members" && p.Post != "moderators" {
			perr = protocol.FieldErrorf(protocol.CodeBadPayload, "post", "neither members nor moderators")
		}
	}
	if perr != nil {
		return fmt.Errorf("the server would refuse this %s: %v", typ, perr)
	}
	return nil
}

// checkServer checks the values of a server payload that the server could
// send.
func checkServer(v any) error {
	lim := protocol.DefaultLimits()
	switch p := v.(type) {
	case *protocol.Welcome:
		if p.Limits != protocol.DefaultLimits() {
			return fmt.Errorf("welcome.limits %+v, the defaults are %+v", p.Limits, protocol.DefaultLimits())
		}
		if p.Name != "" && p.Exp == 0 {
			return fmt.Errorf("welcome.name %q without exp: the server sends name only for a signed identity, with its exp", p.Name)
		}
	case *protocol.Done:
		// A done answers one of the WebSocket's moderation frames (the
		// HTTP API's clear and disconnect are not frames).
		if !slices.Contains([]string{protocol.TypeRedact, protocol.TypeKick, protocol.TypeBan, protocol.TypeUnban, protocol.TypeMute, protocol.TypeUnmute, protocol.TypeConfigure}, p.Action) {
			return fmt.Errorf("done.action %q is not a moderation frame type", p.Action)
		}
		if (p.Action == protocol.TypeRedact) != (p.Seq > 0) || (p.Action == protocol.TypeConfigure) != (p.Post != "") {
			return fmt.Errorf("done %+v: seq is set for redact only, post for configure only", p)
		}
		if !p.Until.IsZero() && p.Action != protocol.TypeBan && p.Action != protocol.TypeMute {
			return fmt.Errorf("done %+v: until is set for ban and mute only", p)
		}
	case *protocol.Kicked:
		if !p.Until.IsZero() && !p.Banned {
			return fmt.Errorf("kicked %+v: until without banned; a kick has no end", p)
		}
	case *protocol.Configured:
		if p.Post != "members" && p.Post != "moderators" {
			return fmt.Errorf("configured %+v: post is members or moderators", p)
		}
	case *protocol.Muted:
		if p.Lifted && !p.Until.IsZero() {
			return fmt.Errorf("muted %+v: a lifted mute has no until", p)
		}
	case *protocol.Message:
		if p.Redacted != nil && p.Message != "" {
			return fmt.Errorf("msg %+v: a redacted message is served with message \"\"", p)
		}
		if p.Redacts != 0 && (p.Redacts >= p.Seq || p.Redacted != nil) {
			return fmt.Errorf("msg %+v: a redaction removes an earlier message and is never redacted", p)
		}
	case *protocol.Authed:
		if p.Exp <= 0 {
			return fmt.Errorf("authed.exp %d: the server sends the new token's exp, which every token has", p.Exp)
		}
	case *protocol.Presence:
		if p.Event != protocol.PresenceJoin && p.Event != protocol.PresenceLeave {
			return fmt.Errorf("presence event %q", p.Event)
		}
	case *protocol.Error:
		if !slices.Contains(protocol.ErrorCodes, p.Code) {
			return fmt.Errorf("error code %q is not in protocol.ErrorCodes", p.Code)
		}
	case *protocol.Created:
		// A created room ID is a nanoid, after a namespace when create
		// named one (SPEC §9).
		ns, id := protocol.SplitRoomID(p.RoomID)
		if len(id) != protocol.RoomIDLen || (len(id) < len(p.RoomID) && !protocol.CheckNamespace(ns)) || !strings.HasSuffix(p.URL, "/r/"+p.RoomID) {
			return fmt.Errorf("created %+v: want a %d-character room ID, after a namespace if any, and a URL ending in /r/<roomID>", p, protocol.RoomIDLen)
		}
	case *protocol.Joined:
		if p.Epoch == "" {
			return fmt.Errorf("joined.epoch is empty; the server never sends an empty epoch")
		}
		if len(p.Members) > lim.MaxMembers || p.Count < len(p.Members) {
			return fmt.Errorf("joined lists %d members with count %d; at most %d are listed and count is never smaller", len(p.Members), p.Count, lim.MaxMembers)
		}
		if err := checkPage(p.History, p.LastSeq, p.More); err != nil {
			return fmt.Errorf("joined: %v", err)
		}
	case *protocol.History:
		if err := checkPage(p.Messages, -1, p.More); err != nil {
			return fmt.Errorf("history: %v", err)
		}
	case *protocol.Event:
		if err := lim.CheckEventName("name", p.Name); err != nil {
			return fmt.Errorf("event: %v", err)
		}
		if len(p.Data) == 0 {
			return fmt.Errorf("event.data is absent; the server sends null for an event without data")
		}
	}
	return nil
}

// checkPage checks a page of messages as the server sends one: consecutive
// seqs, oldest first, at most MaxPage of them, never more than lastSeq
// (-1: unknown), and more only when the page ends below lastSeq.
func checkPage(msgs []protocol.Message, lastSeq int64, more bool) error {
	lim := protocol.DefaultLimits()
	if len(msgs) > lim.MaxPage {
		return fmt.Errorf("%d messages; a page holds at most %d", len(msgs), lim.MaxPage)
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Seq != msgs[i-1].Seq+1 {
			return fmt.Errorf("seq %d follows seq %d; stored seqs are consecutive (shorten a page from its ends only)", msgs[i].Seq, msgs[i-1].Seq)
		}
	}
	if lastSeq < 0 || len(msgs) == 0 {
		if more && len(msgs) == 0 {
			return fmt.Errorf("more is true for an empty page")
		}
		return nil
	}
	end := msgs[len(msgs)-1].Seq
	if end > lastSeq {
		return fmt.Errorf("a message with seq %d past lastSeq %d", end, lastSeq)
	}
	if more != (end < lastSeq) {
		return fmt.Errorf("more is %v, but the page ends at seq %d and lastSeq is %d", more, end, lastSeq)
	}
	return nil
}

// jsonDiff compares two JSON texts as values.
func jsonDiff(want, got []byte) string {
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		return err.Error()
	}
	if err := json.Unmarshal(got, &g); err != nil {
		return err.Error()
	}
	return cmp.Diff(w, g)
}

func TestSeedFrames(t *testing.T) {
	seeds := []string{
		`{"type":"join","payload":{"roomID":"123"}}`,
		`{"type":"msg","payload":{"message":"hi there"}}`,
	}
	for _, f := range []string{asyncAPIFile, protocolDoc} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range seeds {
			if !strings.Contains(string(b), s) {
				t.Errorf("%s does not show the seed frame %s", f, s)
			}
		}
	}
}

// ---- api/openapi.yaml -------------------------------------------------------

// TestOpenAPIProtocolSchemas checks the OpenAPI schemas that are protocol
// types or the HTTP API's own bodies (internal/server), and their examples.
func TestOpenAPIProtocolSchemas(t *testing.T) {
	doc := loadYAML(t, openAPIFile)
	// Responses: every field is always sent, so every property is required.
	types := map[string]reflect.Type{
		"Error":       reflect.TypeFor[protocol.Error](),
		"Created":     reflect.TypeFor[protocol.Created](),
		"Message":     reflect.TypeFor[protocol.Message](),
		"User":        reflect.TypeFor[protocol.User](),
		"RoomInfo":    reflect.TypeFor[server.RoomInfo](),
		"MessagePage": reflect.TypeFor[server.MessagePage](),
		"EventPosted": reflect.TypeFor[server.EventPosted](),
		// Moderation (SPEC §11).
		"Redaction":   reflect.TypeFor[protocol.Redaction](),
		"Done":        reflect.TypeFor[protocol.Done](),
		"Restriction": reflect.TypeFor[server.RestrictionInfo](),
	}
	for name, typ := range types {
		compareSchema(t, doc, mapAt(t, doc, "components", "schemas", name), typ, "components/schemas/"+name)
	}
	// Request bodies: the same properties as the Go type; which ones are
	// required is the handler's business, not the tag's.
	requests := map[string]reflect.Type{
		"PostMessage": reflect.TypeFor[server.PostMessage](),
		"PostEvent":   reflect.TypeFor[server.PostEvent](),
		"CreateRoom":  reflect.TypeFor[protocol.Create](),
		// The one body of every moderation endpoint.
		"ModerationRequest": reflect.TypeFor[server.Reason](),
	}
	for name, typ := range requests {
		where := "components/schemas/" + name
		schema := mapAt(t, doc, "components", "schemas", name)
		fields := jsonFields(typ)
		if got, want := sortedKeys(getMap(schema, "properties")), sortedKeys(fields); !slices.Equal(got, want) {
			t.Errorf("%s: properties %v, the json fields of %s are %v", where, got, typ, want)
			continue
		}
		for _, f := range sortedKeys(fields) {
			compareSchema(t, doc, schemaAt(t, doc, getMap(schema, "properties")[f], where+"/properties/"+f), fields[f].typ, where+"/properties/"+f)
		}
		types[name] = typ
	}
	// The HTTP error codes are protocol.ErrorCodes.
	var enum []string
	for _, v := range asListOrNil(getMap(schemaAt(t, doc, getMap(mapAt(t, doc, "components", "schemas", "Error"), "properties")["code"], "components/schemas/Error/properties/code"))["enum"]) {
		s, _ := v.(string)
		enum = append(enum, s)
	}
	if extra := minus(enum, protocol.ErrorCodes); len(extra) > 0 || len(enum) == 0 {
		t.Errorf("%s: Error.code enum %v; not in protocol.ErrorCodes: %v", openAPIFile, enum, extra)
	}
	// Every JSON example of a response whose schema is one of them decodes
	// strictly into it.
	n := 0
	var walk func(node any, where string)
	walk = func(node any, where string) {
		switch x := node.(type) {
		case map[string]any:
			if media, ok := x["application/json"].(map[string]any); ok {
				ref, _ := getMap(media, "schema")["$ref"].(string)
				if typ, ok := types[strings.TrimPrefix(ref, "#/components/schemas/")]; ok {
					var exs []any
					if ex, ok := media["example"]; ok {
						exs = append(exs, ex)
					}
					for _, e := range getMap(media, "examples") {
						exs = append(exs, getMap(e, "value"))
					}
					for _, ex := range exs {
						n++
						b, err := json.Marshal(ex, json.Deterministic(true))
						if err == nil {
							err = json.Unmarshal(b, reflect.New(typ).Interface(), json.RejectUnknownMembers(true))
						}
						if err != nil {
							t.Errorf("%s: example %s does not decode into protocol.%s: %v", where, b, typ.Name(), err)
						}
					}
				}
			}
			for _, k := range sortedKeys(x) {
				walk(x[k], where+"/"+k)
			}
		case []any:
			for i, e := range x {
				walk(e, fmt.Sprintf("%s/%d", where, i))
			}
		}
	}
	walk(doc["paths"], "paths")
	walk(doc["components"], "components")
	if n == 0 {
		t.Errorf("%s: no example of a protocol type found", openAPIFile)
	}
}

// ---- helpers ----------------------------------------------------------------

func loadYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// resolve follows a {"$ref": "#/a/b"} (or a bare "#/a/b") within doc, and
// any $ref found there, and returns the final target's path ("a/b") and
// object.
func resolve(t *testing.T, doc map[string]any, ref any, where string) (string, map[string]any) {
	t.Helper()
	if m, ok := ref.(map[string]any); ok {
		ref = m["$ref"]
	}
	s, ok := ref.(string)
	if !ok || !strings.HasPrefix(s, "#/") {
		t.Fatalf("%s: not a local $ref: %v", where, ref)
	}
	path := strings.TrimPrefix(s, "#/")
	var node any = doc
	for _, p := range strings.Split(path, "/") {
		m, ok := node.(map[string]any)
		if !ok {
			t.Fatalf("%s: $ref %s: %s is not an object", where, s, p)
		}
		if node, ok = m[p]; !ok {
			t.Fatalf("%s: $ref %s: no %s", where, s, p)
		}
	}
	m := asMap(t, node, path)
	if next, ok := m["$ref"]; ok {
		return resolve(t, doc, next, path)
	}
	return path, m
}

// schemaAt returns node as a schema object, following a $ref.
func schemaAt(t *testing.T, doc map[string]any, node any, where string) map[string]any {
	t.Helper()
	m := asMap(t, node, where)
	if _, ok := m["$ref"]; ok {
		_, m = resolve(t, doc, m, where)
	}
	return m
}

func mapAt(t *testing.T, doc map[string]any, path ...string) map[string]any {
	t.Helper()
	var node any = doc
	for i, p := range path {
		node = asMap(t, node, strings.Join(path[:i], "/"))[p]
	}
	return asMap(t, node, strings.Join(path, "/"))
}

func asMap(t *testing.T, node any, where string) map[string]any {
	t.Helper()
	m, ok := node.(map[string]any)
	if !ok {
		t.Fatalf("%s: want an object, have %T", where, node)
	}
	return m
}

func asList(t *testing.T, node any, where string) []any {
	t.Helper()
	l, ok := node.([]any)
	if !ok {
		t.Fatalf("%s: want a list, have %T", where, node)
	}
	return l
}

func asListOrNil(node any) []any {
	l, _ := node.([]any)
	return l
}

// getMap walks path through nested objects, returning nil where one is missing.
func getMap(node any, path ...string) map[string]any {
	for _, p := range path {
		m, _ := node.(map[string]any)
		node = m[p]
	}
	m, _ := node.(map[string]any)
	return m
}

type block struct {
	line int // of the opening fence
	text string
}

// fencedBlocks returns the ```lang blocks of a Markdown text.
func fencedBlocks(md, lang string) []block {
	var out []block
	var cur *strings.Builder
	start := 0
	for i, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && trimmed == "```"+lang:
			cur, start = new(strings.Builder), i+1
		case cur != nil && trimmed == "```":
			out = append(out, block{line: start, text: cur.String()})
			cur = nil
		case cur != nil:
			cur.WriteString(line)
			cur.WriteByte('\n')
		}
	}
	return out
}

// mdTable returns the body rows (cells trimmed) of the first table after
// the heading line in the Markdown file path.
func mdTable(t *testing.T, path, heading string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	i := slices.Index(lines, heading)
	if i < 0 {
		t.Fatalf("%s: no line %q", path, heading)
	}
	var rows [][]string
	for _, line := range lines[i+1:] {
		if strings.HasPrefix(line, "#") {
			break
		}
		if !strings.HasPrefix(line, "|") {
			if len(rows) > 0 {
				break
			}
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	if len(rows) < 2 {
		t.Fatalf("%s: no table under %q", path, heading)
	}
	return rows[2:] // header and separator
}

func sortedKeys[M ~map[K]V, K interface{ ~string | ~int }, V any](m M) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// minus returns the elements of a that are not in b.
func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}
