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

// ErrReplaced is what a *ConnError is (errors.Is) when the server closed
// the connection because another one took its user over (1000 "resumed
// on another connection", protocol.CloseReplaced): a resume with its
// token or, for a signed identity, any other connection of the same sub
// (SPEC §10: one connection per identity). Reconnecting would take that
// connection over in turn.
var ErrReplaced = errors.New("client: another connection took this user over")

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

	header, err := authHeader(ctx, opts)
	if err != nil {
		return nil, err
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

// authHeader returns opts.Header with the bearer token (Options.Token,
// or a fresh one from Options.TokenSource) set in Authorization; the
// caller's Header is not changed.
func authHeader(ctx context.Context, opts Options) (http.Header, error) {
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
	return header, nil
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
