package identity

import (
	"cmp"
	"errors"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
)

// MaxToken is the longest token accepted (8 KiB, §10); longer is refused
// before parsing, so a huge header or claim set costs nothing to refuse.
const MaxToken = 8 << 10

// maxSub is the longest sub, in characters (§10: it becomes the userID).
const maxSub = 64

// Identity is a verified token: who the connection is and what its rooms
// claim grants. It is never modified after Verify returns it.
type Identity struct {
	UserID  string    // sub: 1–64 characters, no control characters
	Name    string    // the name claim, cleaned like a display name (protocol.Limits.CleanName); "" when absent
	Expires time.Time // exp
	Grants  []Grant   // from the rooms claim, most specific first
}

// Grant is one entry of the rooms claim: an exact room ID, or a prefix
// ending in "*" ("staff:*", "support-*", "*" for every room).
type Grant struct {
	Pattern string
	Role    policy.Role
}

// Role returns the role the token grants in roomID: the exact pattern if
// any, else the longest matching prefix pattern, else policy.RoleNone. A
// prefix matches as a plain string prefix, so "staff:*" covers every room
// of namespace staff.
func (id *Identity) Role(roomID string) policy.Role {
	best, bestLen := policy.RoleNone, -1
	for _, g := range id.Grants {
		prefix, isPrefix := strings.CutSuffix(g.Pattern, "*")
		switch {
		case !isPrefix && g.Pattern == roomID:
			return g.Role
		case isPrefix && len(prefix) > bestLen && strings.HasPrefix(roomID, prefix):
			best, bestLen = g.Role, len(prefix)
		}
	}
	return best
}

// claims is what a token may carry (§10): the registered claims plus name
// and rooms.
type claims struct {
	jwt.RegisteredClaims
	Name  string            `json:"name,omitempty"`
	Rooms map[string]string `json:"rooms,omitempty"`
}

// identity checks the claims jwt does not know and builds the Identity.
func (c *claims) identity() (*Identity, *protocol.Error) {
	sub := c.Subject
	switch {
	case sub == "":
		return nil, refuse("token has no sub")
	case !utf8.ValidString(sub):
		return nil, refuse("token sub is not valid UTF-8")
	case utf8.RuneCountInString(sub) > maxSub:
		return nil, refuse("token sub is %d characters; the limit is %d", utf8.RuneCountInString(sub), maxSub)
	case strings.ContainsFunc(sub, unicode.IsControl):
		return nil, refuse("token sub has control characters")
	}
	id := &Identity{UserID: sub, Expires: c.ExpiresAt.Time}
	if c.Name != "" {
		name, perr := protocol.DefaultLimits().CleanName("name", c.Name)
		if perr != nil {
			return nil, refuse("token %s", perr.Message)
		}
		id.Name = name
	}
	for pattern, r := range c.Rooms {
		if !validPattern(pattern) {
			return nil, refuse("token rooms: %.40q is neither a room ID nor a prefix ending in *", pattern)
		}
		role, ok := policy.ParseRole(r)
		if !ok {
			return nil, refuse("token rooms: %.40q has role %.20q; roles are member, moderator and owner", pattern, r)
		}
		id.Grants = append(id.Grants, Grant{Pattern: pattern, Role: role})
	}
	slices.SortFunc(id.Grants, func(a, b Grant) int {
		_, ap := strings.CutSuffix(a.Pattern, "*")
		_, bp := strings.CutSuffix(b.Pattern, "*")
		switch {
		case ap != bp && !ap:
			return -1 // exact patterns first
		case ap != bp:
			return 1
		}
		return cmp.Or(cmp.Compare(len(b.Pattern), len(a.Pattern)), strings.Compare(a.Pattern, b.Pattern))
	})
	return id, nil
}

// validPattern reports whether p is a room ID (protocol.Limits.CheckRoomID)
// or a prefix of one followed by "*": "*", "staff:*", "staff:sup*", "ab*".
func validPattern(p string) bool {
	limits := protocol.DefaultLimits()
	prefix, isPrefix := strings.CutSuffix(p, "*")
	if !isPrefix {
		return limits.CheckRoomID("rooms", p) == nil
	}
	ns, rest := protocol.SplitRoomID(prefix)
	if len(rest) < len(prefix) { // has a colon: a whole namespace, then a prefix of a room ID
		return protocol.CheckNamespace(ns) && len(rest) <= limits.MaxRoomID && roomChars(rest)
	}
	return len(prefix) <= limits.MaxRoomID && roomChars(prefix)
}

func roomChars(s string) bool {
	for i := range len(s) {
		if !strings.ContainsRune(protocol.RoomIDAlphabet, rune(s[i])) {
			return false
		}
	}
	return true
}

// refuse is every refusal of Verify: unauthorized, with a message that
// names the problem and never echoes the token.
func refuse(format string, args ...any) *protocol.Error {
	return protocol.Errorf(protocol.CodeUnauthorized, format, args...)
}

// refusal translates a jwt parse error into the sentence a client sees.
// Signature problems come before claim problems because jwt checks the
// signature first; among claim problems expiry is named first.
func (v *Verifier) refusal(t *jwt.Token, c *claims, err error) *protocol.Error {
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return refuse("token malformed")
	}
	if t != nil {
		alg, ok := t.Header["alg"].(string)
		switch {
		case !ok:
			return refuse("token has no alg")
		case !slices.Contains(v.algs, alg) && printableAlg(alg):
			return refuse("token algorithm %s not allowed", alg)
		case !slices.Contains(v.algs, alg):
			return refuse("token algorithm not allowed")
		}
	}
	switch {
	case errors.Is(err, errUnknownKID):
		return refuse("token key id is not in the JWKS")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return refuse("token signature invalid")
	case errors.Is(err, jwt.ErrTokenExpired):
		return refuse("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return refuse("token not valid yet")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && c.ExpiresAt == nil:
		return refuse("token has no exp")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && c.Issuer == "" && v.issuer != "":
		return refuse("token has no iss")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && len(c.Audience) == 0 && v.audience != "":
		return refuse("token has no aud")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return refuse("token issued in the future (iat)")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return refuse("token iss is not the configured issuer")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refuse("token aud does not name the configured audience")
	}
	return refuse("token invalid")
}

// printableAlg keeps an unknown alg out of the message unless it is short
// and plain, so that a refusal never carries arbitrary token bytes.
func printableAlg(alg string) bool {
	if alg == "" || len(alg) > 16 {
		return false
	}
	for _, r := range alg {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
