package identity_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/roomchat/roomchat/internal/identity"
	"github.com/roomchat/roomchat/internal/identity/identitytest"
	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
)

const (
	secretEnv   = "ROOMCHAT_JWT_SECRET"
	previousEnv = "ROOMCHAT_JWT_PREVIOUS"
	apiKeysEnv  = "ROOMCHAT_API_KEYS"
	secret      = identitytest.Secret
	previous    = "the-previous-secret-0123456789abcdef"
	issuer      = "https://id.example.com"
	audience    = "roomchat"
)

// keySet is one of each kind of key, generated once per test binary: RSA
// 2048 takes a while.
type keySet struct {
	rsa, rsaOther *rsa.PrivateKey
	ec            *ecdsa.PrivateKey
	ed            ed25519.PrivateKey
}

var testKeys = sync.OnceValue(func() keySet {
	var k keySet
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

// env is a getenv over a map.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func defaultEnv() map[string]string {
	return map[string]string{secretEnv: secret, previousEnv: previous, apiKeysEnv: "key-aaaaaaaaaaaaaaaa, key-bbbbbbbbbbbbbbbb"}
}

// auth is an [auth] table in optional mode allowing algs.
func auth(algs ...string) policy.Auth {
	return policy.Auth{
		Mode:          policy.AuthOptional,
		Algorithms:    algs,
		HMACSecretEnv: secretEnv,
		Leeway:        5 * time.Second,
		APIKeysEnv:    apiKeysEnv,
	}
}

func newVerifier(t testing.TB, a policy.Auth, vars map[string]string) *identity.Verifier {
	t.Helper()
	v, err := identity.New(t.Context(), a, env(vars))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// strict is the verifier of the bad-token table: HS256 and RS256 (the
// RSA key in a PEM file), issuer and audience checked.
func strict(t testing.TB) (*identity.Verifier, string) {
	t.Helper()
	pemPath := identitytest.WritePublicKey(t, t.TempDir(), "rsa.pem", &testKeys().rsa.PublicKey)
	a := auth("HS256", "RS256")
	a.PublicKeyFile = pemPath
	a.Issuer, a.Audience = issuer, audience
	return newVerifier(t, a, defaultEnv()), pemPath
}

// good returns the claims of a token strict accepts.
func good() map[string]any {
	c := identitytest.Claims("u-1")
	c["iss"], c["aud"] = issuer, audience
	return c
}

func with(c map[string]any, kv ...any) map[string]any {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

type badToken struct {
	name, token, want string
}

// badTokens is §10's bad-token table, for strict.
func badTokens(t testing.TB, pemPath string) []badToken {
	k := testKeys()
	now := time.Now()
	hs := func(c map[string]any) string { return identitytest.SignHS256(t, secret, c) }
	pemBytes, err := os.ReadFile(pemPath)
	if err != nil {
		t.Fatal(err)
	}
	valid := hs(good())
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + strings.Split(hs(with(good(), "sub", "admin")), ".")[1] + "." + parts[2]
	return []badToken{
		{"expired", hs(with(good(), "exp", now.Add(-time.Hour).Unix())), "token expired"},
		{"not yet valid", hs(with(good(), "nbf", now.Add(time.Hour).Unix())), "token not valid yet"},
		{"issued in the future", hs(with(good(), "iat", now.Add(time.Hour).Unix())), "token issued in the future"},
		{"HS256 wrong secret", identitytest.SignHS256(t, "another-secret-of-enough-length-0123456789", good()), "token signature invalid"},
		{"RS256 wrong key", identitytest.Sign(t, k.rsaOther, "RS256", good()), "token signature invalid"},
		{"tampered payload", tampered, "token signature invalid"},
		{"alg none", identitytest.Sign(t, jwt.UnsafeAllowNoneSignatureType, "none", good()), "token algorithm none not allowed"},
		{"HS256 keyed with the RSA public key PEM", identitytest.Sign(t, pemBytes, "HS256", good()), "token signature invalid"},
		{"ES256 not in the allow-list", identitytest.Sign(t, k.ec, "ES256", good()), "token algorithm ES256 not allowed"},
		{"RS512 not in the allow-list", identitytest.Sign(t, k.rsa, "RS512", good()), "token algorithm RS512 not allowed"},
		{"unknown alg", unsigned(`{"alg":"XYZ1","typ":"JWT"}`, good()), "token algorithm XYZ1 not allowed"},
		{"no alg", unsigned(`{"typ":"JWT"}`, good()), "token has no alg"},
		{"missing exp", hs(with(good(), "exp", nil)), "token has no exp"},
		{"missing sub", hs(with(good(), "sub", nil)), "token has no sub"},
		{"empty sub", hs(with(good(), "sub", "")), "token has no sub"},
		{"sub of 65 characters", hs(with(good(), "sub", strings.Repeat("s", 65))), "token sub is 65 characters; the limit is 64"},
		{"sub with a control character", hs(with(good(), "sub", "u\n1")), "token sub has control characters"},
		{"name too long", hs(with(good(), "name", strings.Repeat("n", 33))), "token name must be at most 32 characters"},
		{"name blank", hs(with(good(), "name", "   ")), "token name must not be empty"},
		{"bad role in rooms", hs(with(good(), "rooms", map[string]any{"staff:*": "admin"})), `has role "admin"`},
		{"bad pattern in rooms", hs(with(good(), "rooms", map[string]any{"staff:*:x": "member"})), "neither a room ID nor a prefix"},
		{"star inside a pattern", hs(with(good(), "rooms", map[string]any{"a*b": "member"})), "neither a room ID nor a prefix"},
		{"rooms not a map", hs(with(good(), "rooms", []string{"a"})), "token malformed"},
		{"role not a string", hs(with(good(), "rooms", map[string]any{"a": 3})), "token malformed"},
		{"exp not a number", hs(with(good(), "exp", "tomorrow")), "token malformed"},
		{"wrong iss", hs(with(good(), "iss", "https://evil.example.com")), "token iss is not the configured issuer"},
		{"missing iss", hs(with(good(), "iss", nil)), "token has no iss"},
		{"missing aud", hs(with(good(), "aud", nil)), "token has no aud"},
		{"expired and wrong iss", hs(with(good(), "iss", "x", "exp", now.Add(-time.Hour).Unix())), "token expired"},
		{"wrong aud", hs(with(good(), "aud", "other")), "token aud does not name the configured audience"},
		{"malformed: one segment", "abc", "token malformed"},
		{"malformed: empty", "", "token malformed"},
		{"malformed: bad base64", "a.b.c", "token malformed"},
		{"malformed: header not JSON", "bm90IGpzb24." + parts[1] + "." + parts[2], "token malformed"},
		{"9 KB", hs(with(good(), "pad", strings.Repeat("x", 9000))), "token larger than 8 KiB"},
		{"9 KB of junk", strings.Repeat("A", 9<<10), "token larger than 8 KiB"},
	}
}

// unsigned builds a token with the given header and a signature that
// nothing made: for headers jwt refuses to sign with.
func unsigned(header string, claims map[string]any) string {
	body, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc(body) + ".c2ln"
}

// jwksJSON is the public JWKS of keys, each under its kid.
func jwksJSON(t *testing.T, keys map[string]any) []byte {
	t.Helper()
	store := jwkset.NewMemoryStorage()
	for kid, key := range keys {
		jwk, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatalf("JWK %s: %v", kid, err)
		}
		if err := store.KeyWrite(t.Context(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	b, err := store.JSONPublic(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func httpHandler(body func() []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body())
	})
}

func bigOne() *big.Int { return big.NewInt(1) }

func TestValidEveryAlgorithm(t *testing.T) {
	k := testKeys()
	dir := t.TempDir()
	for _, c := range []struct {
		alg     string
		signKey any
		pub     any
	}{
		{"HS256", []byte(secret), nil},
		{"RS256", k.rsa, &k.rsa.PublicKey},
		{"ES256", k.ec, &k.ec.PublicKey},
		{"EdDSA", k.ed, k.ed.Public()},
	} {
		t.Run(c.alg, func(t *testing.T) {
			a := auth(c.alg)
			if c.pub != nil {
				a.PublicKeyFile = identitytest.WritePublicKey(t, dir, c.alg+".pem", c.pub)
			}
			v := newVerifier(t, a, defaultEnv())
			exp := time.Now().Add(time.Hour).Truncate(time.Second)
			claims := map[string]any{
				"sub": "user-" + c.alg, "name": "  Alice  ", "exp": exp.Unix(),
				"rooms": map[string]any{"staff:*": "member", "staff:ops": "owner", "staff:op*": "moderator"},
			}
			id, perr := v.Verify(identitytest.Sign(t, c.signKey, c.alg, claims))
			if perr != nil {
				t.Fatalf("Verify: %v", perr)
			}
			want := &identity.Identity{
				UserID: "user-" + c.alg, Name: "Alice", Expires: exp,
				Grants: []identity.Grant{
					{Pattern: "staff:ops", Role: policy.RoleOwner},
					{Pattern: "staff:op*", Role: policy.RoleModerator},
					{Pattern: "staff:*", Role: policy.RoleMember},
				},
			}
			if diff := cmp.Diff(want, id); diff != "" {
				t.Errorf("identity (-want +got):\n%s", diff)
			}
			if got := v.Mode(); got != policy.AuthOptional {
				t.Errorf("Mode() = %q, want optional", got)
			}
		})
	}
}

func TestBadTokens(t *testing.T) {
	v, pemPath := strict(t)
	if _, perr := v.Verify(identitytest.SignHS256(t, secret, good())); perr != nil {
		t.Fatalf("the table's baseline token is refused: %v", perr)
	}
	if _, perr := v.Verify(identitytest.Sign(t, testKeys().rsa, "RS256", good())); perr != nil {
		t.Fatalf("the table's baseline RS256 token is refused: %v", perr)
	}
	for _, c := range badTokens(t, pemPath) {
		t.Run(c.name, func(t *testing.T) {
			id, perr := v.Verify(c.token)
			if perr == nil {
				t.Fatalf("Verify accepted it: %+v", id)
			}
			if id != nil {
				t.Errorf("Verify returned an identity with its error: %+v", id)
			}
			if perr.Code != protocol.CodeUnauthorized {
				t.Errorf("code = %q, want %q", perr.Code, protocol.CodeUnauthorized)
			}
			if !strings.Contains(perr.Message, c.want) {
				t.Errorf("message = %q, want it to contain %q", perr.Message, c.want)
			}
			if len(c.token) > 8 && strings.Contains(perr.Message, c.token) {
				t.Errorf("message echoes the token: %q", perr.Message)
			}
			if len(perr.Message) > 200 {
				t.Errorf("message is %d bytes; a refusal is one short sentence", len(perr.Message))
			}
		})
	}
}

func TestRotation(t *testing.T) {
	a := auth("HS256")
	a.PreviousHMACSecretEnv = previousEnv
	v := newVerifier(t, a, defaultEnv())
	for _, c := range []struct {
		name, key string
		ok        bool
	}{
		{"current", secret, true},
		{"previous", previous, true},
		{"unknown", "an-unknown-secret-0123456789abcdefgh", false},
	} {
		_, perr := v.Verify(identitytest.SignHS256(t, c.key, identitytest.Claims("u")))
		if (perr == nil) != c.ok {
			t.Errorf("%s secret: Verify error %v, want accepted=%v", c.name, perr, c.ok)
		}
		if perr != nil && !strings.Contains(perr.Message, "token signature invalid") {
			t.Errorf("%s secret: message %q", c.name, perr.Message)
		}
	}

	// Once rotation is over and previous_hmac_secret_env is cleared, the
	// previous secret no longer verifies.
	after := newVerifier(t, auth("HS256"), defaultEnv())
	if _, perr := after.Verify(identitytest.SignHS256(t, previous, identitytest.Claims("u"))); perr == nil {
		t.Error("the previous secret verifies without previous_hmac_secret_env")
	}
}

// TestLeeway runs in a synctest bubble: its clock starts at a whole second
// and moves only when the test sleeps.
func TestLeeway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVerifier(t, auth("HS256"), defaultEnv()) // leeway 5s
		start := time.Now()
		expiring := identitytest.SignHS256(t, secret, map[string]any{"sub": "u", "exp": start.Add(10 * time.Second).Unix()})
		early := identitytest.SignHS256(t, secret, map[string]any{"sub": "u", "exp": start.Add(time.Hour).Unix(), "nbf": start.Add(3 * time.Second).Unix()})
		late := identitytest.SignHS256(t, secret, map[string]any{"sub": "u", "exp": start.Add(time.Hour).Unix(), "nbf": start.Add(10 * time.Second).Unix()})
		check := func(what, token, want string) {
			t.Helper()
			_, perr := v.Verify(token)
			switch {
			case want == "" && perr != nil:
				t.Errorf("%s at +%s: refused: %v", what, time.Since(start), perr)
			case want != "" && (perr == nil || perr.Message != want):
				t.Errorf("%s at +%s: error %v, want %q", what, time.Since(start), perr, want)
			}
		}
		check("nbf 3s ahead, leeway 5s", early, "")
		check("nbf 10s ahead, leeway 5s", late, "token not valid yet")
		time.Sleep(6 * time.Second)
		check("nbf 4s ahead", late, "")
		time.Sleep(8 * time.Second) // +14s: exp was at +10s
		check("expired 4s ago, leeway 5s", expiring, "")
		time.Sleep(2 * time.Second) // +16s
		check("expired 6s ago, leeway 5s", expiring, "token expired")

		a := auth("HS256")
		a.Leeway = 0
		v = newVerifier(t, a, defaultEnv())
		check("expired 6s ago, no leeway", expiring, "token expired")
	})
}

// jwksServer serves the public keys of keys (kid → key) as a JWKS on
// loopback; set replaces them.
type jwksServer struct {
	mu   sync.Mutex
	body []byte
	URL  string
}

func newJWKSServer(t *testing.T, keys map[string]any) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(t, keys)
	srv := httptest.NewServer(httpHandler(func() []byte {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.body
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/.well-known/jwks.json"
	return s
}

func (s *jwksServer) set(t *testing.T, keys map[string]any) {
	t.Helper()
	b := jwksJSON(t, keys)
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

func TestJWKS(t *testing.T) {
	k := testKeys()
	srv := newJWKSServer(t, map[string]any{"rsa-1": &k.rsa.PublicKey, "ed-1": k.ed.Public()})
	a := auth("RS256", "EdDSA")
	a.JWKSURL = srv.URL
	v := newVerifier(t, a, defaultEnv())
	for _, c := range []struct {
		name, token, want string
	}{
		{"RS256 by kid", identitytest.SignKID(t, k.rsa, "RS256", "rsa-1", identitytest.Claims("u")), ""},
		{"EdDSA by kid", identitytest.SignKID(t, k.ed, "EdDSA", "ed-1", identitytest.Claims("u")), ""},
		{"RS256 without kid", identitytest.Sign(t, k.rsa, "RS256", identitytest.Claims("u")), ""},
		{"RS256 naming the Ed25519 kid", identitytest.SignKID(t, k.rsa, "RS256", "ed-1", identitytest.Claims("u")), "token signature invalid"},
		{"RS256 by a key not in the set", identitytest.SignKID(t, k.rsaOther, "RS256", "rsa-1", identitytest.Claims("u")), "token signature invalid"},
		{"HS256", identitytest.SignHS256(t, secret, identitytest.Claims("u")), "token algorithm HS256 not allowed"},
		{"unknown kid", identitytest.SignKID(t, k.rsaOther, "RS256", "rsa-9", identitytest.Claims("u")), "token key id is not in the JWKS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, perr := v.Verify(c.token)
			switch {
			case c.want == "" && perr != nil:
				t.Errorf("refused: %v", perr)
			case c.want != "" && (perr == nil || perr.Code != protocol.CodeUnauthorized || perr.Message != c.want):
				t.Errorf("error %v, want unauthorized %q", perr, c.want)
			}
		})
	}

	// HS256 cannot be allowed beside a JWKS.
	a.Algorithms = []string{"RS256", "HS256"}
	if _, err := identity.New(t.Context(), a, env(defaultEnv())); err == nil || !strings.Contains(err.Error(), "jwks_url") {
		t.Errorf("New with HS256 and jwks_url: %v, want an error naming jwks_url", err)
	}
}

// TestJWKSRotation: a token naming a kid the verifier has not seen makes
// it fetch the set again, so a key the issuer just published verifies.

func TestJWKSRotation(t *testing.T) {
	k := testKeys()
	srv := newJWKSServer(t, map[string]any{"old": &k.rsa.PublicKey})
	a := auth("RS256")
	a.JWKSURL = srv.URL
	v := newVerifier(t, a, defaultEnv())
	srv.set(t, map[string]any{"old": &k.rsa.PublicKey, "new": &k.rsaOther.PublicKey})
	if _, perr := v.Verify(identitytest.SignKID(t, k.rsaOther, "RS256", "new", identitytest.Claims("u"))); perr != nil {
		t.Errorf("a token under the newly published key: %v", perr)
	}
	if _, perr := v.Verify(identitytest.SignKID(t, k.rsa, "RS256", "old", identitytest.Claims("u"))); perr != nil {
		t.Errorf("a token under the old key: %v", perr)
	}
}

func TestRole(t *testing.T) {
	v := newVerifier(t, auth("HS256"), defaultEnv())
	id, perr := v.Verify(identitytest.SignHS256(t, secret, with(identitytest.Claims("u"), "rooms", map[string]any{
		"*":           "member",
		"staff:*":     "member",
		"staff:ops-*": "moderator",
		"staff:ops-1": "owner",
		"staff:o*":    "owner",
		"lobby":       "moderator",
	})))
	if perr != nil {
		t.Fatal(perr)
	}
	for room, want := range map[string]policy.Role{
		"staff:ops-1":  policy.RoleOwner,     // exact
		"staff:ops-2":  policy.RoleModerator, // the longest prefix, though a shorter one grants more
		"staff:other":  policy.RoleOwner,     // staff:o*
		"staff:x":      policy.RoleMember,    // staff:*
		"lobby":        policy.RoleModerator, // exact
		"lobby2":       policy.RoleMember,    // only *
		"news:a":       policy.RoleMember,    // only *
		"staff:ops-1x": policy.RoleModerator, // an exact pattern is not a prefix
	} {
		if got := id.Role(room); got != want {
			t.Errorf("Role(%q) = %v, want %v", room, got, want)
		}
	}
	var order []string
	for _, g := range id.Grants {
		order = append(order, g.Pattern)
	}
	if want := []string{"staff:ops-1", "lobby", "staff:ops-*", "staff:o*", "staff:*", "*"}; !slices.Equal(order, want) {
		t.Errorf("Grants order = %q, want most specific first %q", order, want)
	}

	bare, perr := v.Verify(identitytest.SignHS256(t, secret, with(identitytest.Claims("u"), "rooms", map[string]any{"staff:ops": "owner"})))
	if perr != nil {
		t.Fatal(perr)
	}
	for _, room := range []string{"staff:op", "staff:opsx", "lobby"} {
		if got := bare.Role(room); got != policy.RoleNone {
			t.Errorf("Role(%q) = %v, want none", room, got)
		}
	}
}

func TestAPIKey(t *testing.T) {
	v := newVerifier(t, auth("HS256"), map[string]string{secretEnv: secret, apiKeysEnv: " key-aaaaaaaaaaaaaaaa ,, key-bbbbbbbbbbbbbbbb, "})
	for key, want := range map[string]bool{
		"key-aaaaaaaaaaaaaaaa":  true,
		"key-bbbbbbbbbbbbbbbb":  true,
		"key-aaaaaaaaaaaaaaa":   false, // a prefix
		"key-aaaaaaaaaaaaaaaaa": false, // longer
		" key-aaaaaaaaaaaaaaaa": false, // the caller trims, not APIKey
		"":                      false,
		secret:                  false,
	} {
		if got := v.APIKey(key); got != want {
			t.Errorf("APIKey(%q) = %v, want %v", key, got, want)
		}
	}
	none := newVerifier(t, auth("HS256"), map[string]string{secretEnv: secret})
	if none.APIKey("key-aaaaaaaaaaaaaaaa") || none.APIKey("") {
		t.Error("APIKey accepts a key when none is configured")
	}
}

func TestModeOff(t *testing.T) {
	for _, mode := range []policy.AuthMode{policy.AuthOff, ""} {
		// Off reads nothing: no secret in the environment is needed.
		v := newVerifier(t, policy.Auth{Mode: mode, Algorithms: []string{"HS256"}, HMACSecretEnv: secretEnv, APIKeysEnv: apiKeysEnv}, nil)
		if v.Mode() != policy.AuthOff {
			t.Errorf("Mode() = %q, want off", v.Mode())
		}
		_, perr := v.Verify(identitytest.SignHS256(t, secret, identitytest.Claims("u")))
		if perr == nil || perr.Code != protocol.CodeUnauthorized {
			t.Errorf("mode %q: Verify = %v, want unauthorized", mode, perr)
		}
		if v.APIKey("key-aaaaaaaaaaaaaaaa") {
			t.Errorf("mode %q: APIKey accepted a key", mode)
		}
	}
}

func TestNewErrors(t *testing.T) {
	k := testKeys()
	dir := t.TempDir()
	writePEM := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := identitytest.WritePublicKey(t, dir, "rsa.pem", &k.rsa.PublicKey)
	ecPEM := identitytest.WritePublicKey(t, dir, "ec.pem", &k.ec.PublicKey)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withFile := func(a policy.Auth, f string) policy.Auth { a.PublicKeyFile = f; return a }
	withPrev := func(a policy.Auth) policy.Auth { a.PreviousHMACSecretEnv = previousEnv; return a }
	for _, c := range []struct {
		name string
		a    policy.Auth
		env  map[string]string
		want string
	}{
		{"secret variable unset", auth("HS256"), map[string]string{}, "ROOMCHAT_JWT_SECRET holds 0 bytes"},
		{"short secret", auth("HS256"), map[string]string{secretEnv: "short"}, "ROOMCHAT_JWT_SECRET holds 5 bytes; an HMAC secret needs at least 32"},
		{"short previous secret", withPrev(auth("HS256")), map[string]string{secretEnv: secret, previousEnv: "x"}, "ROOMCHAT_JWT_PREVIOUS holds 1 bytes"},
		{"previous secret unset", withPrev(auth("HS256")), map[string]string{secretEnv: secret}, "ROOMCHAT_JWT_PREVIOUS"},
		{"no secret variable named", func() policy.Auth { a := auth("HS256"); a.HMACSecretEnv = ""; return a }(), defaultEnv(), "hmac_secret_env"},
		{"short API key", auth("HS256"), map[string]string{secretEnv: secret, apiKeysEnv: "key-aaaaaaaaaaaaaaaa,short"}, "ROOMCHAT_API_KEYS: key 2 holds 5 bytes"},
		{"no algorithms", auth(), defaultEnv(), "no algorithms"},
		{"unknown algorithm", auth("HS512"), defaultEnv(), `"HS512"`},
		{"unreadable PEM", withFile(auth("RS256"), filepath.Join(dir, "missing.pem")), defaultEnv(), "missing.pem"},
		{"not PEM", withFile(auth("RS256"), notPEM), defaultEnv(), "holds no PEM block"},
		{"private key PEM", withFile(auth("RS256"), writePEM("priv.pem", "PRIVATE KEY", privDER)), defaultEnv(), `holds a PEM "PRIVATE KEY"`},
		{"PEM block garbage", withFile(auth("RS256"), writePEM("junk.pem", "PUBLIC KEY", []byte("junk"))), defaultEnv(), "junk.pem"},
		{"P-384 key", withFile(auth("ES256"), identitytest.WritePublicKey(t, dir, "p384.pem", &p384.PublicKey)), defaultEnv(), "none of RS256, ES256 (P-256) and EdDSA"},
		{"RSA 1024", withFile(auth("RS256"), identitytest.WritePublicKey(t, dir, "small.pem", &small.PublicKey)), defaultEnv(), "1024-bit RSA key"},
		{"EC key, only RS256 allowed", withFile(auth("RS256"), ecPEM), defaultEnv(), "holds a key for ES256, which algorithms does not allow"},
		{"RSA key, ES256 also allowed", withFile(auth("RS256", "ES256"), rsaPEM), defaultEnv(), "ES256 is allowed but public_key_file"},
		{"no public key", auth("EdDSA"), defaultEnv(), "neither public_key_file nor jwks_url"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := identity.New(t.Context(), c.a, env(c.env))
			if err == nil {
				v.Close()
				t.Fatalf("New succeeded, want an error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v\nwant it to contain %q", err, c.want)
			}
			if c.env[secretEnv] == secret && strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}

// TestPublicKeyFormats: PKCS #1 "RSA PUBLIC KEY" and a certificate's key
// are read as well as PKIX.
func TestPublicKeyFormats(t *testing.T) {
	k := testKeys()
	dir := t.TempDir()
	pkcs1 := filepath.Join(dir, "pkcs1.pem")
	if err := os.WriteFile(pkcs1, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)}), 0o600); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: bigOne(), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.ed.Public(), k.ed)
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		file, alg string
		key       any
	}{{pkcs1, "RS256", k.rsa}, {cert, "EdDSA", k.ed}} {
		a := auth(c.alg)
		a.PublicKeyFile = c.file
		v := newVerifier(t, a, defaultEnv())
		if _, perr := v.Verify(identitytest.Sign(t, c.key, c.alg, identitytest.Claims("u"))); perr != nil {
			t.Errorf("%s from %s: %v", c.alg, filepath.Base(c.file), perr)
		}
	}
}

// FuzzVerify: whatever the token, Verify never panics and returns either
// an identity that satisfies §10's claim rules or an unauthorized error.
func FuzzVerify(f *testing.F) {
	v, pemPath := strict(f)
	f.Add(identitytest.SignHS256(f, secret, good()))
	f.Add(identitytest.Sign(f, testKeys().rsa, "RS256", with(good(), "name", "Bob", "rooms", map[string]any{"a:*": "owner"})))
	for _, c := range badTokens(f, pemPath) {
		f.Add(c.token)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, perr := v.Verify(token)
		if perr != nil {
			if id != nil || perr.Code != protocol.CodeUnauthorized || perr.Message == "" {
				t.Fatalf("Verify = %+v, %+v; want nil and an unauthorized error", id, perr)
			}
			return
		}
		if id == nil {
			t.Fatal("Verify returned neither an identity nor an error")
		}
		if n := len([]rune(id.UserID)); n < 1 || n > 64 {
			t.Fatalf("accepted a sub of %d characters", n)
		}
		if id.Expires.IsZero() {
			t.Fatal("accepted a token without exp")
		}
		for _, g := range id.Grants {
			if g.Role < policy.RoleMember || g.Role > policy.RoleOwner {
				t.Fatalf("grant %+v has no role", g)
			}
		}
	})
}
