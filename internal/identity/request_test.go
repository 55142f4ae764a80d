package identity_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/roomchat/roomchat/internal/identity"
)

func TestFromRequest(t *testing.T) {
	big := strings.Repeat("a", identity.MaxToken+1)
	for _, c := range []struct {
		name    string
		target  string
		headers map[string][]string
		token   string
		via     string
		ok      bool
	}{
		{"none", "/ws", nil, "", "", false},
		{"header", "/ws", map[string][]string{"Authorization": {"Bearer h.h.h"}}, "h.h.h", "header", true},
		{"header scheme in lower case", "/ws", map[string][]string{"Authorization": {"bearer  h.h.h "}}, "h.h.h", "header", true},
		{"header of another scheme", "/ws", map[string][]string{"Authorization": {"Basic dTpw"}}, "", "", false},
		{"header bearer with nothing", "/ws", map[string][]string{"Authorization": {"Bearer"}}, "", "header", true},
		{"subprotocol", "/ws", map[string][]string{"Sec-WebSocket-Protocol": {"roomchat, roomchat.bearer.s.s.s"}}, "s.s.s", "subprotocol", true},
		{"subprotocol first in the list", "/ws", map[string][]string{"Sec-WebSocket-Protocol": {"roomchat.bearer.s.s.s,roomchat"}}, "s.s.s", "subprotocol", true},
		{"subprotocol in a second header line", "/ws", map[string][]string{"Sec-WebSocket-Protocol": {"roomchat", "roomchat.bearer.s.s.s"}}, "s.s.s", "subprotocol", true},
		{"subprotocol without a token", "/ws", map[string][]string{"Sec-WebSocket-Protocol": {"roomchat"}}, "", "", false},
		{"query", "/ws?token=q.q.q", nil, "q.q.q", "query", true},
		{"query empty", "/ws?token=", nil, "", "query", true},
		{"header beats subprotocol and query", "/ws?token=q.q.q", map[string][]string{"Authorization": {"Bearer h.h.h"}, "Sec-WebSocket-Protocol": {"roomchat, roomchat.bearer.s.s.s"}}, "h.h.h", "header", true},
		{"subprotocol beats query", "/ws?token=q.q.q", map[string][]string{"Sec-WebSocket-Protocol": {"roomchat, roomchat.bearer.s.s.s"}}, "s.s.s", "subprotocol", true},
		{"basic header, then query", "/ws?token=q.q.q", map[string][]string{"Authorization": {"Basic dTpw"}}, "q.q.q", "query", true},
		{"oversized returned as is", "/ws", map[string][]string{"Authorization": {"Bearer " + big}}, big, "header", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", c.target, nil)
			for k, vs := range c.headers {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			token, via, ok := identity.FromRequest(r)
			if token != c.token || via != c.via || ok != c.ok {
				t.Errorf("FromRequest = %.20q, %q, %v; want %.20q, %q, %v", token, via, ok, c.token, c.via, c.ok)
			}
		})
	}
	if identity.BearerSubprotocol != "roomchat.bearer." {
		t.Errorf("BearerSubprotocol = %q", identity.BearerSubprotocol)
	}
}
