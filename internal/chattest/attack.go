package chattest

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/roomchat/roomchat/internal/protocol"
)

// The helpers below are for attack loops: they take no testing.TB and
// return their errors, so that a loop can run in a goroutine of its own
// beside the test's honest clients and count what the server refused.

// HTTPFrom is an HTTP client whose connections come from the local address
// local (any address of 127.0.0.0/8 works on Linux), so that a test can
// stand for many clients, each with an address of its own.
func HTTPFrom(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// DialFrom upgrades to base's /ws (base is http://HOST:PORT) from the
// local address local and reads welcome. When the server refuses the
// upgrade, it returns the response (its status and Retry-After) with the
// error.
func DialFrom(ctx context.Context, base, local string) (*websocket.Conn, *http.Response, error) {
	hc := HTTPFrom(local)
	defer hc.CloseIdleConnections()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(-1)
	if _, err := AwaitFrame(ctx, c, protocol.TypeWelcome); err != nil {
		c.CloseNow()
		return nil, nil, err
	}
	return c, nil, nil
}

// AwaitFrame reads c until an event of type typ or an error event arrives,
// for at most Timeout. Reading is the only thing that may touch c
// meanwhile: coder/websocket closes a connection whose Read context ends.
func AwaitFrame(ctx context.Context, c *websocket.Conn, typ string) (protocol.Envelope, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return protocol.Envelope{}, err
		}
		env, perr := protocol.DecodeEnvelope(b)
		if perr != nil {
			return env, perr
		}
		if env.Type == typ || env.Type == protocol.TypeError {
			return env, nil
		}
	}
}
