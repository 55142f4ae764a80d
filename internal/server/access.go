package server

import (
	"net/http"

	"github.com/roomchat/roomchat/internal/policy"
)

// mayPost answers whether the HTTP request r may post to roomID under p
// (SPEC §9 post, §10 API keys): it writes the refusal itself.
func (s *Server) mayPost(w http.ResponseWriter, r *http.Request, roomID string, p *policy.Policy) bool {
	role := policy.RoleMember
	if perr := p.MayPost(role, true); perr != nil {
		s.fail(w, statusOf(perr), perr)
		return false
	}
	return true
}
