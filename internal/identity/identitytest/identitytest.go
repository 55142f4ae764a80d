// Package identitytest mints tokens and keys for tests of package identity
// and of the server (SPEC §10): tokens signed in the test with real keys,
// and public key files written where a configuration can name them. Only
// tests import it.
package identitytest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Secret is an HMAC secret long enough for identity.New (32 bytes or more).
const Secret = "roomchat-test-secret-0123456789abcdef"

// Claims returns the claims of a plain valid token: sub, and exp one hour
// from now. Add "name", "rooms", "nbf", "iss", "aud" as the test needs.
func Claims(sub string) map[string]any {
	return map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
}

// Sign signs claims with key under alg ("HS256" with a []byte or string
// secret, "RS256" with an *rsa.PrivateKey, "ES256" with an
// *ecdsa.PrivateKey, "EdDSA" with an ed25519.PrivateKey, "none" with
// jwt.UnsafeAllowNoneSignatureType). It fails the test if jwt cannot sign.
func Sign(t testing.TB, key any, alg string, claims map[string]any) string {
	t.Helper()
	return SignKID(t, key, alg, "", claims)
}

// SignKID is Sign with a "kid" header naming the key (for a JWKS); kid ""
// sets none.
func SignKID(t testing.TB, key any, alg, kid string, claims map[string]any) string {
	t.Helper()
	m := jwt.GetSigningMethod(alg)
	if m == nil {
		t.Fatalf("identitytest: no signing method %q", alg)
	}
	tok := jwt.NewWithClaims(m, jwt.MapClaims(claims))
	if kid != "" {
		tok.Header["kid"] = kid
	}
	if s, ok := key.(string); ok {
		key = []byte(s)
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("identitytest: sign %s: %v", alg, err)
	}
	return s
}

// SignHS256 signs claims with an HMAC secret, as an application holding
// ROOMCHAT_JWT_SECRET would.
func SignHS256(t testing.TB, secret string, claims map[string]any) string {
	t.Helper()
	return Sign(t, []byte(secret), "HS256", claims)
}

// WriteRSAKey generates an RSA 2048 key pair and writes its public key as
// PEM ("PUBLIC KEY") to dir/jwt-rs256.pem. It returns the private key, to
// sign with Sign(t, key, "RS256", …), and the file's path, for
// public_key_file.
func WriteRSAKey(t testing.TB, dir string) (*rsa.PrivateKey, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("identitytest: generate RSA key: %v", err)
	}
	return key, WritePublicKey(t, dir, "jwt-rs256.pem", &key.PublicKey)
}

// WritePublicKey writes pub (an *rsa.PublicKey, *ecdsa.PublicKey or
// ed25519.PublicKey) as a PKIX "PUBLIC KEY" PEM file dir/name and returns
// its path.
func WritePublicKey(t testing.TB, dir, name string, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatalf("identitytest: marshal public key: %v", err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	return path
}

// Token is an HS256 token (Secret) for sub expiring at exp, whose rooms
// claim is rooms (pattern → role; nil: none).
func Token(t testing.TB, sub string, exp time.Time, rooms map[string]any) string {
	t.Helper()
	c := Claims(sub)
	c["exp"] = exp.Unix()
	if rooms != nil {
		c["rooms"] = rooms
	}
	return SignHS256(t, Secret, c)
}
