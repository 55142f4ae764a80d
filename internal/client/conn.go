package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/coder/websocket"
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/roomchat/roomchat/internal/protocol"
)

// ErrClosed is returned by Next, Send and the request helpers after Close.
var ErrClosed = errors.New("client: connection closed")

// DefaultReadLimit is the largest frame a Conn reads when Options.ReadLimit
// is 0. A server pages its history (joined and history replies hold at most
// Limits.MaxPageBytes, 256 KiB, of messages) and a batched frame holds at
// most what it queued for the connection (1 MiB before it gives up on a
// slow reader), but a server configured with larger limits, or an older
// one that replays everything after since in one joined, sends more: 64 MiB
// holds thousands of 4000-character messages.
const DefaultReadLimit = 64 << 20

// Options configure Dial. The zero value dials without batching or resume.
type Options struct {
	// Batch asks the server to pack several events into one frame
	// (GET /ws?batch=1). Next still returns one event at a time.
	Batch bool
	// Resume is the newest token of an earlier connection (Conn.Resume):
	// the new connection keeps that connection's userID if it is within
	// the server's resume window. It is sent in the WebSocket subprotocol
	// roomchat.resume.<token> (protocol.ResumeSubprotocol), which stays
	// out of the request lines that proxies log; a token that cannot be a
	// subprotocol name (not base64url) goes in ?resume= instead.
	Resume string
	// Header is sent with the handshake request (e.g. for a proxy).
	Header http.Header
	// HTTPClient performs the handshake; nil means http.DefaultClient.
	HTTPClient *http.Client
	// ReadLimit is the largest frame accepted, in bytes; 0 means
	// DefaultReadLimit and a negative value means no limit. A larger frame
	// closes the connection with 1009.
	ReadLimit int64
	// Token is a signed identity (SPEC §10), sent on the handshake as
	// "Authorization: Bearer <token>". A server refuses a bad one with
	// 401 (a *DialError that errors.Is ErrUnauthorized).
	Token string
	// TokenSource, if set, is asked for a fresh token before each
	// connection (then Token is not used) and, by a Session, before the
	// token in force expires: the Session sends it in an auth frame, so
	// the connection outlives its first token.
	TokenSource func(ctx context.Context) (string, error)
}

// ErrUnauthorized is what a *DialError is (errors.Is) when the server
// refused the handshake with 401: the token was missing where one is
// required, or presented but invalid (SPEC §10). Retrying with the same
// token cannot succeed.
var ErrUnauthorized = errors.New("client: the server refused the token (401)")

// ErrTokenExpired is what a *ConnError is (errors.Is) when the server
// closed the connection with 4001: its token expired and no auth frame
// renewed it in time (SPEC §10). Reconnecting needs a new token.
var ErrTokenExpired = errors.New("client: the token expired (4001)")

// event is one server event: its decoded envelope and its exact bytes.
type event struct {
	env protocol.Envelope
	raw []byte
}

// Conn is one WebSocket connection to a roomchat server.
//
// A Conn runs one goroutine that reads frames, splits batches and routes
// each event: a reply whose id matches a pending request goes to that
// request, everything else is queued for Next. The queue is unbounded, so
// a Conn that is never read only grows until it is closed; Next should be
// called by one goroutine, while any number of goroutines may send and make
// requests concurrently.
type Conn struct {
	ws         *websocket.Conn
	welcome    protocol.Welcome
	welcomeRaw []byte

	// cancel ends readCtx, the context of every ws.Read. Called by Close
	// after the close frame has been sent.
	cancel context.CancelFunc
	// done is closed when readLoop has returned and err is set.
	done chan struct{}
	// notify wakes Next when the queue grows. Capacity 1, never closed.
	notify chan struct{}

	mu      sync.Mutex
	queue   []event               // guarded by mu
	waiters map[string]chan event // guarded by mu; each channel has capacity 1
	err     error                 // guarded by mu; set once, before done closes
	closing bool                  // guarded by mu; set by Close and CloseNow
	resume  string                // guarded by mu; the newest resume token
}

// Dial connects to the roomchat server at serverURL (http://host[:port], see
// WebSocketURL), reads its welcome and starts the Conn's reader. ctx bounds
// the handshake and the welcome only; the Conn lives until Close or until
// the server ends it. Errors are network errors, a failed handshake (the
// HTTP status is in the message) or a first frame that is not a welcome.
func Dial(ctx context.Context, serverURL string, opts Options) (*Conn, error) {
	u, err := WebSocketURL(serverURL)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if opts.Batch {
		q.Set("batch", "1")
	}
	var protocols []string
	switch {
	case opts.Resume == "":
	case base64URL(opts.Resume):
		protocols = []string{protocol.Subprotocol, protocol.ResumeSubprotocol + opts.Resume}
	default:
		q.Set("resume", opts.Resume)
	}
	u.RawQuery = q.Encode()
	shown := *u
	shown.RawQuery = "" // the resume token is a credential; keep it out of errors

	header := opts.Header
	token := opts.Token
	if opts.TokenSource != nil {
		t, err := opts.TokenSource(ctx)
		if err != nil {
			return nil, fmt.Errorf("get a token: %w", err)
		}
		token = t
	}
	if token != "" {
		header = header.Clone()
		if header == nil {
			header = http.Header{}
		}
		header.Set("Authorization", "Bearer "+token)
	}

	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:   opts.HTTPClient,
		HTTPHeader:   header,
		Subprotocols: protocols,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, &DialError{URL: shown.String(), Status: resp.Status, StatusCode: resp.StatusCode, Reason: refusal(resp), Err: err}
		}
		return nil, &DialError{URL: shown.String(), Err: err}
	}
	limit := opts.ReadLimit
	if limit == 0 {
		limit = DefaultReadLimit
	}
	ws.SetReadLimit(limit)

	c := &Conn{
		ws:      ws,
		done:    make(chan struct{}),
		notify:  make(chan struct{}, 1),
		waiters: make(map[string]chan event),
	}
	if err := c.readWelcome(ctx); err != nil {
		ws.CloseNow()
		return nil, err
	}
	readCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.readLoop(readCtx)
	return c, nil
}

// base64URL reports whether s is made of base64url's characters only, all
// of which a subprotocol name may hold (RFC 6455 §4.1: an HTTP token).
func base64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case 'A' <= b && b <= 'Z', 'a' <= b && b <= 'z', '0' <= b && b <= '9', b == '-', b == '_':
		default:
			return false
		}
	}
	return true
}

// DialError is a failed connection attempt. Err is the underlying network
// or handshake error; Status is the HTTP status line when the server
// answered the handshake with something other than 101, StatusCode its
// code and Reason the message of its JSON error body, if it had one. A
// 401 is ErrUnauthorized (errors.Is).
type DialError struct {
	URL        string
	Status     string
	StatusCode int
	Reason     string
	Err        error
}

func (e *DialError) Error() string {
	switch {
	case e.Status != "" && e.Reason != "":
		return fmt.Sprintf("connect to %s: server answered %s: %s", e.URL, e.Status, e.Reason)
	case e.Status != "":
		return fmt.Sprintf("connect to %s: server answered %s", e.URL, e.Status)
	}
	return fmt.Sprintf("connect to %s: %v", e.URL, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// Is makes a 401 refusal match ErrUnauthorized.
func (e *DialError) Is(target error) bool {
	return target == ErrUnauthorized && e.StatusCode == http.StatusUnauthorized
}

// refusal is the message of a refused handshake's JSON error body
// ({"code","message"}, SPEC §5), or "". coder/websocket keeps the first
// 1024 bytes of the body.
func refusal(resp *http.Response) string {
	if resp.Body == nil {
		return ""
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return ""
	}
	var pe protocol.Error
	if json.Unmarshal(b, &pe) != nil {
		return ""
	}
	return pe.Message
}

// readWelcome reads until the first event, which must be a welcome. Any
// event batched after it is queued.
func (c *Conn) readWelcome(ctx context.Context) error {
	for {
		typ, frame, err := c.ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("read welcome: %w", err)
		}
		if typ != websocket.MessageText {
			return errors.New("read welcome: server sent a binary frame")
		}
		for _, raw := range protocol.SplitBatch(frame) {
			env, perr := protocol.DecodeEnvelope(raw)
			if perr != nil {
				return fmt.Errorf("read welcome: %s", perr.Message)
			}
			if c.welcomeRaw == nil {
				if env.Type != protocol.TypeWelcome {
					return fmt.Errorf("read welcome: first event is %q, want welcome", env.Type)
				}
				if err := decode(env, &c.welcome); err != nil {
					return err
				}
				c.welcomeRaw = raw
				c.resume = c.welcome.Resume
				continue
			}
			c.queue = append(c.queue, event{env, raw})
		}
		if c.welcomeRaw != nil {
			return nil
		}
	}
}

// readLoop owns ws.Read. It ends when the connection does, records why, and
// wakes every waiter.
func (c *Conn) readLoop(ctx context.Context) {
	err := c.read(ctx)
	c.mu.Lock()
	if c.closing {
		err = ErrClosed
	}
	c.err = err
	c.mu.Unlock()
	close(c.done)
}

func (c *Conn) read(ctx context.Context) error {
	for {
		typ, frame, err := c.ws.Read(ctx)
		if err != nil {
			return &ConnError{Err: err}
		}
		if typ != websocket.MessageText {
			c.ws.Close(websocket.StatusUnsupportedData, "binary frames are not expected")
			return &ConnError{Err: errors.New("server sent a binary frame")}
		}
		for _, raw := range protocol.SplitBatch(frame) {
			env, perr := protocol.DecodeEnvelope(raw)
			if perr != nil {
				c.ws.Close(websocket.StatusInvalidFramePayloadData, "bad event")
				return &ConnError{Err: fmt.Errorf("server sent a bad event: %s", perr.Message)}
			}
			c.route(event{env, raw})
		}
	}
}

func (c *Conn) route(ev event) {
	var renewed protocol.Resume
	if ev.env.Type == protocol.TypeResume {
		decode(ev.env, &renewed) // an undecodable one is only queued
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if renewed.Resume != "" {
		c.resume = renewed.Resume
	}
	if ev.env.ID != "" {
		if w, ok := c.waiters[ev.env.ID]; ok {
			delete(c.waiters, ev.env.ID)
			w <- ev // capacity 1, one send per waiter: never blocks
			return
		}
	}
	c.queue = append(c.queue, ev)
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// ConnError is a connection that ended other than by Close: a network
// error, or a close frame from the server (then websocket.CloseStatus(err)
// gives its code, e.g. 1001 at server shutdown).
type ConnError struct{ Err error }

func (e *ConnError) Error() string {
	if ce, ok := errors.AsType[websocket.CloseError](e.Err); ok {
		if ce.Reason != "" {
			return fmt.Sprintf("connection closed by server (%d): %s", int(ce.Code), ce.Reason)
		}
		return fmt.Sprintf("connection closed by server (%d)", int(ce.Code))
	}
	return "connection lost: " + e.Err.Error()
}

func (e *ConnError) Unwrap() error { return e.Err }

// Is makes a 4001 close match ErrTokenExpired.
func (e *ConnError) Is(target error) bool {
	return target == ErrTokenExpired && websocket.CloseStatus(e.Err) == websocket.StatusCode(protocol.CloseTokenExpired.Code)
}

// Welcome returns the welcome the server sent first.
func (c *Conn) Welcome() protocol.Welcome { return c.welcome }

// Resume returns the newest resume token the server gave this connection:
// the welcome's, or that of a later resume event, which the server sends
// to a connection open long enough for its token to age (SPEC §4). Pass it
// as Options.Resume to keep the userID on the next connection.
func (c *Conn) Resume() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resume
}

// WelcomeRaw returns the welcome event's exact bytes. The caller must not
// modify them.
func (c *Conn) WelcomeRaw() []byte { return c.welcomeRaw }

// Done is closed when the connection has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up, ErrClosed after Close, and a
// *ConnError when the server or the network ended it.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Next returns the next server event that is not a reply to a pending
// request, with its exact bytes as the server sent them (one line of a
// batched frame, without the newline). It blocks until an event arrives,
// ctx ends (the Conn stays usable) or the connection ends; events already
// received are returned before the connection's error.
func (c *Conn) Next(ctx context.Context) (protocol.Envelope, []byte, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			ev := c.queue[0]
			c.queue[0] = event{}
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return ev.env, ev.raw, nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return protocol.Envelope{}, nil, err
		}
		select {
		case <-c.notify:
		case <-c.done:
		case <-ctx.Done():
			return protocol.Envelope{}, nil, ctx.Err()
		}
	}
}

// Send writes one frame {"type", "id"?, "payload"?}. payload is one of
// protocol's payload structs or nil. It does not wait for a reply. If ctx
// ends while the frame is being written, the connection is closed (that is
// how coder/websocket abandons a partial frame).
func (c *Conn) Send(ctx context.Context, typ, id string, payload any) error {
	b, err := json.Marshal(protocol.Frame{Type: typ, ID: id, Payload: payload})
	if err != nil {
		return fmt.Errorf("encode %s: %w", typ, err)
	}
	if err := c.Err(); err != nil {
		return err
	}
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		if cerr := c.Err(); cerr != nil {
			return cerr
		}
		return &ConnError{Err: err}
	}
	return nil
}

// Request sends a frame with a fresh id and waits for the server's direct
// reply carrying that id. An error reply is returned as a *protocol.Error
// together with its envelope and bytes. It returns ctx's error if ctx ends
// first (a late reply then goes to Next), and the connection's error if the
// connection ends first.
func (c *Conn) Request(ctx context.Context, typ string, payload any) (protocol.Envelope, []byte, error) {
	return c.request(ctx, NewID(), typ, payload)
}

func (c *Conn) request(ctx context.Context, id, typ string, payload any) (protocol.Envelope, []byte, error) {
	// The server answers a longer id with an error that cannot carry it,
	// so the reply would never be matched: refuse it here.
	if perr := c.welcome.Limits.WithDefaults().CheckID(id); perr != nil {
		return protocol.Envelope{}, nil, perr
	}
	w := c.await(id)
	defer c.forget(id)
	if err := c.Send(ctx, typ, id, payload); err != nil {
		return protocol.Envelope{}, nil, err
	}
	select {
	case ev := <-w:
		return reply(ev)
	case <-c.done:
		return protocol.Envelope{}, nil, c.Err()
	case <-ctx.Done():
		return protocol.Envelope{}, nil, ctx.Err()
	}
}

// await registers a waiter for the reply carrying id; forget removes it.
// The channel has capacity 1 and receives at most one event.
func (c *Conn) await(id string) chan event {
	w := make(chan event, 1)
	c.mu.Lock()
	c.waiters[id] = w
	c.mu.Unlock()
	return w
}

func (c *Conn) forget(id string) {
	c.mu.Lock()
	delete(c.waiters, id)
	c.mu.Unlock()
}

// reply returns a reply event, turning an error reply into a *protocol.Error.
func reply(ev event) (protocol.Envelope, []byte, error) {
	if ev.env.Type == protocol.TypeError {
		var pe protocol.Error
		if err := decode(ev.env, &pe); err != nil {
			return ev.env, ev.raw, err
		}
		return ev.env, ev.raw, &pe
	}
	return ev.env, ev.raw, nil
}

// expect checks that a reply has the wanted type and decodes its payload.
func expect(env protocol.Envelope, want string, v any) error {
	if env.Type != want {
		return fmt.Errorf("server answered %s with %q", want, env.Type)
	}
	if v == nil {
		return nil
	}
	return decode(env, v)
}

func decode(env protocol.Envelope, v any) error {
	if perr := protocol.DecodePayload(env, v); perr != nil {
		return fmt.Errorf("decode %s: %s", env.Type, perr.Message)
	}
	return nil
}

// Join joins roomID (created implicitly by the server if new) and returns
// the joined reply. name "" lets the server pick a guest name; since, when
// not nil, asks for every stored message with seq > *since.
func (c *Conn) Join(ctx context.Context, roomID, name string, since *int64) (protocol.Joined, error) {
	j, _, err := c.JoinRaw(ctx, roomID, name, since)
	return j, err
}

// JoinRaw is Join that also returns the joined event's exact bytes.
func (c *Conn) JoinRaw(ctx context.Context, roomID, name string, since *int64) (protocol.Joined, []byte, error) {
	var j protocol.Joined
	env, raw, err := c.Request(ctx, protocol.TypeJoin, protocol.Join{RoomID: roomID, Name: name, Since: since})
	if err != nil {
		return j, raw, err
	}
	return j, raw, expect(env, protocol.TypeJoined, &j)
}

// SendMessage sends text to roomID ("" for the only room the connection is
// in) with a fresh id and waits for its ack, i.e. until the message is
// stored. The msg event for it arrives through Next like any other.
func (c *Conn) SendMessage(ctx context.Context, roomID, text string) (protocol.Ack, error) {
	a, _, err := c.SendMessageID(ctx, NewID(), roomID, text)
	return a, err
}

// SendMessageID is SendMessage with a caller-chosen id, and it also returns
// the reply's bytes. Re-sending the same id after a lost reply (from the
// same user, e.g. after resuming) gets the original ack and stores nothing.
// An id longer than the server's Limits.MaxID (64) is a bad_envelope
// *protocol.Error, returned without sending anything.
func (c *Conn) SendMessageID(ctx context.Context, id, roomID, text string) (protocol.Ack, []byte, error) {
	var a protocol.Ack
	env, raw, err := c.request(ctx, id, protocol.TypeMsg, protocol.Send{Message: text, RoomID: roomID})
	if err != nil {
		return a, raw, err
	}
	return a, raw, expect(env, protocol.TypeAck, &a)
}

// History asks for a page of roomID's stored messages with seq > after,
// oldest first, and waits for it. The connection must be in the room
// (not_in_room otherwise); roomID "" means the only room it is in. limit 0
// asks for the server's maximum (Limits.MaxPage, 200); the server also cuts
// a page at Limits.MaxPageBytes (256 KiB) of messages, but a page holds at
// least one message when there is one. More is true when the page stopped
// before the room's last message: ask again with after = the last seq of
// this page. A bad after or limit is a bad_payload *protocol.Error.
//
// Send one history request at a time on a connection and wait for its
// reply: a Session does this after a joined with more (see Session).
func (c *Conn) History(ctx context.Context, roomID string, after int64, limit int) (protocol.History, error) {
	h, _, err := c.HistoryRaw(ctx, roomID, after, limit)
	return h, err
}

// HistoryRaw is History that also returns the reply's exact bytes.
func (c *Conn) HistoryRaw(ctx context.Context, roomID string, after int64, limit int) (protocol.History, []byte, error) {
	var h protocol.History
	env, raw, err := c.Request(ctx, protocol.TypeHistory, protocol.HistoryRequest{RoomID: roomID, After: &after, Limit: limit})
	if err != nil {
		return h, raw, err
	}
	return h, raw, expect(env, protocol.TypeHistory, &h)
}

// Event sends the custom event name with data to the other members of
// roomID ("" for the only room the connection is in) and waits until the
// server has handled it. The server relays an event to the other members
// only (never back to the sender), stores nothing and sends no reply on
// success, so Event follows it with a ping: the server handles a
// connection's frames in order, so the pong means the event was accepted,
// and an error carrying the event's id means it was refused (a
// *protocol.Error: bad_payload with field "name" for a bad name, too_long
// with field "data" for data over Limits.MaxEventData, not_in_room,
// rate_limited).
//
// data is encoded with github.com/go-json-experiment/json, maps with
// their keys sorted; a jsontext.Value (or an encoding/json.RawMessage) is
// sent as it is, and nil sends no data (the members see null).
func (c *Conn) Event(ctx context.Context, roomID, name string, data any) error {
	d, err := encodeData(data)
	if err != nil {
		return err
	}
	evID, pingID := NewID(), NewID()
	ew := c.await(evID)
	defer c.forget(evID)
	pw := c.await(pingID)
	defer c.forget(pingID)
	if err := c.Send(ctx, protocol.TypeEvent, evID, protocol.SendEvent{Name: name, Data: d, RoomID: roomID}); err != nil {
		return err
	}
	if err := c.Send(ctx, protocol.TypePing, pingID, nil); err != nil {
		return err
	}
	select {
	case ev := <-ew:
		// The pong still follows; wait for it, so that it does not
		// turn up in Next.
		select {
		case <-pw:
		case <-c.done:
		case <-ctx.Done():
		}
		return eventReply(ev)
	case ev := <-pw:
		// Replies are routed in the order they arrive, so an error for
		// the event, which the server sent before the pong, is already
		// waiting if there is one.
		select {
		case ev := <-ew:
			return eventReply(ev)
		default:
		}
		env, _, err := reply(ev)
		if err != nil {
			return err
		}
		return expect(env, protocol.TypePong, nil)
	case <-c.done:
		return c.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// eventReply turns a reply carrying an event's id (only an error is
// expected) into Event's result.
func eventReply(ev event) error {
	env, _, err := reply(ev)
	if err != nil {
		return err
	}
	return fmt.Errorf("server answered event with %q", env.Type)
}

// encodeData encodes an event's data; nil and an empty jsontext.Value
// mean no data.
func encodeData(data any) (jsontext.Value, error) {
	switch d := data.(type) {
	case nil:
		return nil, nil
	case jsontext.Value:
		if len(d) == 0 {
			return nil, nil
		}
		if !d.IsValid() {
			return nil, errors.New("encode event data: not valid JSON")
		}
		return d, nil
	}
	b, err := json.Marshal(data, json.Deterministic(true)) // map keys sorted
	if err != nil {
		return nil, fmt.Errorf("encode event data: %w", err)
	}
	return jsontext.Value(b), nil
}

// Create asks the server for a new room (it does not join it).
func (c *Conn) Create(ctx context.Context) (protocol.Created, error) {
	cr, _, err := c.CreateRaw(ctx)
	return cr, err
}

// CreateIn asks the server for a new room in namespace ns (SPEC §9: its
// ID is "ns:<nanoid>"); ns "" is Create.
func (c *Conn) CreateIn(ctx context.Context, ns string) (protocol.Created, error) {
	cr, _, err := c.CreateInRaw(ctx, ns)
	return cr, err
}

// CreateRaw is Create that also returns the created event's exact bytes.
func (c *Conn) CreateRaw(ctx context.Context) (protocol.Created, []byte, error) {
	return c.CreateInRaw(ctx, "")
}

// CreateInRaw is CreateIn that also returns the created event's exact bytes.
func (c *Conn) CreateInRaw(ctx context.Context, ns string) (protocol.Created, []byte, error) {
	var cr protocol.Created
	env, raw, err := c.Request(ctx, protocol.TypeCreate, protocol.Create{Namespace: ns})
	if err != nil {
		return cr, raw, err
	}
	return cr, raw, expect(env, protocol.TypeCreated, &cr)
}

// Leave leaves roomID ("" for the only room) and waits for left.
func (c *Conn) Leave(ctx context.Context, roomID string) error {
	env, _, err := c.Request(ctx, protocol.TypeLeave, protocol.RoomRef{RoomID: roomID})
	if err != nil {
		return err
	}
	return expect(env, protocol.TypeLeft, nil)
}

// Typing tells the other members of roomID ("" for the only room) that
// this user is typing. The server sends no reply.
func (c *Conn) Typing(ctx context.Context, roomID string) error {
	return c.Send(ctx, protocol.TypeTyping, "", protocol.RoomRef{RoomID: roomID})
}

// Auth renews the connection's signed identity (SPEC §10): it sends token
// in an auth frame and waits for authed, whose exp it returns (Unix
// seconds). The token must be for the connection's user (forbidden
// otherwise); an invalid one is unauthorized, a *protocol.Error. Send it
// before the token in force expires, or within the grace period after
// the server's token_expired error (Next returns that error event), or
// the server closes the connection with 4001 (ErrTokenExpired).
func (c *Conn) Auth(ctx context.Context, token string) (protocol.Authed, error) {
	var a protocol.Authed
	env, _, err := c.Request(ctx, protocol.TypeAuth, protocol.Auth{Token: token})
	if err != nil {
		return a, err
	}
	return a, expect(env, protocol.TypeAuthed, &a)
}

// Ping sends an application-level ping and waits for the pong.
func (c *Conn) Ping(ctx context.Context) error {
	env, _, err := c.Request(ctx, protocol.TypePing, nil)
	if err != nil {
		return err
	}
	return expect(env, protocol.TypePong, nil)
}

// Close closes the connection with 1000 (a clean close, which the server
// announces to the room at once), waits up to coder/websocket's 5 s close
// handshake, and returns after the reader goroutine has exited. Next and
// pending requests then return ErrClosed. Close may be called more than once.
func (c *Conn) Close() error {
	return c.close(func() { c.ws.Close(websocket.StatusNormalClosure, "") })
}

// CloseNow drops the connection without a close frame, as a crash or a
// lost network would (the server treats it as a drop and waits for a
// resume). Tests use it; it returns after the reader goroutine has exited.
func (c *Conn) CloseNow() error {
	return c.close(func() { c.ws.CloseNow() })
}

func (c *Conn) close(closeWS func()) error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	// The close frame goes out before readCtx is cancelled: cancelling a
	// Read's context makes coder/websocket drop TCP without one.
	closeWS()
	c.cancel()
	<-c.done
	return nil
}

// NewID returns a fresh random request id (26 characters of base32).
func NewID() string { return rand.Text() }
