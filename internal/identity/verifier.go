package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/roomchat/roomchat/internal/policy"
	"github.com/roomchat/roomchat/internal/protocol"
)

const (
	// minSecret is the shortest HMAC secret accepted: 32 bytes, the
	// output size of SHA-256 (RFC 7518 §3.2 requires at least that).
	minSecret = 32
	// minAPIKey is the shortest API key accepted: 16 bytes, 128 bits if
	// random, out of reach of guessing through the HTTP API.
	minAPIKey = 16
	// minRSABits refuses RSA public keys shorter than 2048 bits (NIST SP
	// 800-131A).
	minRSABits = 2048
	// jwksTimeout bounds each JWKS fetch, and how long a Verify may wait
	// for the one refresh an unknown kid triggers (at most one per five
	// minutes, keyfunc's default), so a burst of tokens with made-up kids
	// cannot hold upgrades for long.
	jwksTimeout = 5 * time.Second
)

// errUnknownKID: a JWKS is configured and it has no key for the token's
// kid, and no other key fits.
var errUnknownKID = errors.New("token key id not found")

// Verifier checks tokens and API keys against one [auth] table. It is
// safe for concurrent use and never modified after New, except that the
// JWKS it holds is refreshed in the background.
type Verifier struct {
	mode     policy.AuthMode
	algs     []string
	parser   *jwt.Parser
	hmac     [][]byte         // current secret, then the previous one; only for HS256
	pub      crypto.PublicKey // from public_key_file, or nil
	pubAlg   string           // the one algorithm pub verifies
	issuer   string           // iss required when set
	audience string           // aud must name it when set
	jwks     keyfunc.Keyfunc  // nil without jwks_url
	apiKeys  [][sha256.Size]byte

	cancel    context.CancelFunc // ends the JWKS refresh goroutine
	closeOnce sync.Once
}

// New builds a verifier from a. getenv reads environment variables
// (os.Getenv in production; tests pass a map). It reads the HMAC secrets
// when HS256 is allowed (current and previous, each at least 32 bytes,
// else an error naming the variable), the PEM public key when an
// asymmetric algorithm is allowed, the API keys (comma-separated, blanks
// trimmed, each at least 16 bytes; none when the variable is empty), and
// starts the JWKS refresh when a.JWKSURL is set. A JWKS that cannot be
// fetched at start is logged, not fatal: keys are fetched again hourly and
// when a token names an unknown kid. The refresh goroutine ends when ctx
// ends or at Close. With a.Mode off (or empty) it reads nothing and
// returns a Verifier that Verify and APIKey refuse everything with.
func New(ctx context.Context, a policy.Auth, getenv func(string) string) (*Verifier, error) {
	v := &Verifier{mode: a.Mode, issuer: a.Issuer, audience: a.Audience, cancel: func() {}}
	if v.mode == "" || v.mode == policy.AuthOff {
		v.mode = policy.AuthOff
		return v, nil
	}
	if len(a.Algorithms) == 0 {
		return nil, errors.New("auth: no algorithms are allowed; list the algorithms tokens may be signed with")
	}
	for _, alg := range a.Algorithms {
		if !slices.Contains(policy.Algorithms, alg) {
			return nil, fmt.Errorf("auth: algorithm %q is not one of %s", alg, strings.Join(policy.Algorithms, ", "))
		}
		if !slices.Contains(v.algs, alg) {
			v.algs = append(v.algs, alg)
		}
	}
	if err := v.loadHMAC(a, getenv); err != nil {
		return nil, err
	}
	if err := v.loadPublicKey(a); err != nil {
		return nil, err
	}
	if err := v.loadAPIKeys(a.APIKeysEnv, getenv); err != nil {
		return nil, err
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.algs),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(a.Leeway),
		jwt.WithStrictDecoding(),
	}
	if a.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.Issuer))
	}
	if a.Audience != "" {
		opts = append(opts, jwt.WithAudience(a.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	if a.JWKSURL != "" {
		jctx, cancel := context.WithCancel(ctx)
		kf, err := keyfunc.NewDefaultOverrideCtx(jctx, []string{a.JWKSURL}, keyfunc.Override{
			Client:           &http.Client{Timeout: jwksTimeout},
			HTTPTimeout:      jwksTimeout,
			RateLimitWaitMax: jwksTimeout,
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(ctx context.Context, err error) {
					slog.WarnContext(ctx, "jwks fetch failed; tokens keep verifying against the keys fetched before", "url", u, "err", err)
				}
			},
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("auth: jwks_url %q: %w", a.JWKSURL, err)
		}
		v.jwks, v.cancel = kf, cancel
	}
	return v, nil
}

// loadHMAC reads the HMAC secrets (hmac_secret_env, then
// previous_hmac_secret_env) when HS256 is allowed, each at least
// minSecret bytes; HS256 and jwks_url exclude each other.
func (v *Verifier) loadHMAC(a policy.Auth, getenv func(string) string) error {
	if slices.Contains(v.algs, "HS256") {
		if a.JWKSURL != "" {
			return errors.New("auth: HS256 cannot be allowed with jwks_url: a JWKS publishes public keys")
		}
		if a.HMACSecretEnv == "" {
			return errors.New("auth: HS256 is allowed but hmac_secret_env names no environment variable")
		}
		for _, name := range []string{a.HMACSecretEnv, a.PreviousHMACSecretEnv} {
			if name == "" {
				continue
			}
			s := getenv(name)
			if len(s) < minSecret {
				return fmt.Errorf("auth: environment variable %s holds %d bytes; an HMAC secret needs at least %d", name, len(s), minSecret)
			}
			v.hmac = append(v.hmac, []byte(s))
		}
	}
	return nil
}

// loadPublicKey reads public_key_file when an asymmetric algorithm is
// allowed, and checks that every such algorithm has a key: the file's, or
// the JWKS's.
func (v *Verifier) loadPublicKey(a policy.Auth) error {
	var asym []string
	for _, alg := range v.algs {
		if alg != "HS256" {
			asym = append(asym, alg)
		}
	}
	if len(asym) == 0 {
		return nil
	}
	if a.PublicKeyFile != "" {
		key, alg, err := readPublicKey(a.PublicKeyFile)
		if err != nil {
			return fmt.Errorf("auth: public_key_file: %w", err)
		}
		if !slices.Contains(asym, alg) {
			return fmt.Errorf("auth: public_key_file %s holds a key for %s, which algorithms does not allow", a.PublicKeyFile, alg)
		}
		v.pub, v.pubAlg = key, alg
	}
	if a.JWKSURL != "" {
		return nil
	}
	for _, alg := range asym {
		switch {
		case a.PublicKeyFile == "":
			return fmt.Errorf("auth: %s is allowed but neither public_key_file nor jwks_url is set", alg)
		case alg != v.pubAlg:
			return fmt.Errorf("auth: %s is allowed but public_key_file %s holds a key for %s and jwks_url is not set", alg, a.PublicKeyFile, v.pubAlg)
		}
	}
	return nil
}

// readPublicKey reads one PEM public key (PKIX "PUBLIC KEY", PKCS #1 "RSA
// PUBLIC KEY", or a "CERTIFICATE"'s key) and says which algorithm it
// verifies. A private key is refused: the server never needs one.
func readPublicKey(path string) (crypto.PublicKey, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", fmt.Errorf("%s holds no PEM block", path)
	}
	var key crypto.PublicKey
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, "", fmt.Errorf("%s holds a PEM %q; give the public key (\"PUBLIC KEY\")", path, block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	if k, ok := key.(*rsa.PublicKey); ok && k.N.BitLen() < minRSABits {
		return nil, "", fmt.Errorf("%s holds a %d-bit RSA key; at least %d bits are needed", path, k.N.BitLen(), minRSABits)
	}
	alg := keyAlg(key)
	if alg == "" {
		return nil, "", fmt.Errorf("%s holds a %T, which none of RS256, ES256 (P-256) and EdDSA (Ed25519) uses", path, key)
	}
	return key, alg, nil
}

// keyAlg names the one algorithm a public key verifies, or "".
func keyAlg(key any) string {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return "RS256"
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return "ES256"
		}
	case ed25519.PublicKey:
		return "EdDSA"
	}
	return ""
}

func (v *Verifier) loadAPIKeys(name string, getenv func(string) string) error {
	if name == "" {
		return nil
	}
	for i, k := range strings.Split(getenv(name), ",") {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if len(k) < minAPIKey {
			return fmt.Errorf("auth: environment variable %s: key %d holds %d bytes; an API key needs at least %d", name, i+1, len(k), minAPIKey)
		}
		v.apiKeys = append(v.apiKeys, sha256.Sum256([]byte(k)))
	}
	return nil
}

// Mode is the [auth] mode the verifier was built with.
func (v *Verifier) Mode() policy.AuthMode { return v.mode }

// Verify checks a token: size, algorithm in the allow-list, signature
// (HMAC secrets only for HS256, the current and previous one; a public key
// only for its own algorithm), exp required, nbf and iat, iss and aud when
// configured, all with the leeway; then sub, name and rooms. A refusal is
// always code unauthorized with a message that names the problem.
func (v *Verifier) Verify(token string) (*Identity, *protocol.Error) {
	if v.mode == policy.AuthOff {
		return nil, refuse("tokens are not accepted: auth mode is off")
	}
	if len(token) > MaxToken {
		return nil, refuse("token larger than 8 KiB")
	}
	var c claims
	t, err := v.parser.ParseWithClaims(token, &c, v.key)
	if err != nil {
		return nil, v.refusal(t, &c, err)
	}
	return c.identity()
}

// key is the jwt.Keyfunc: the keys that may verify t, by its algorithm.
// jwt has already refused an algorithm outside the allow-list.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	var set jwt.VerificationKeySet
	if alg == "HS256" {
		for _, s := range v.hmac {
			set.Keys = append(set.Keys, s)
		}
		return set, nil
	}
	if v.pub != nil && v.pubAlg == alg {
		set.Keys = append(set.Keys, v.pub)
	}
	if v.jwks != nil {
		got, err := v.jwks.Keyfunc(t)
		switch {
		case err != nil && len(set.Keys) > 0:
			// The file's key may still verify it.
		case errors.Is(err, jwkset.ErrKeyNotFound):
			return nil, errors.Join(errUnknownKID, err)
		case err != nil:
			return nil, err // the kid names a key for another algorithm
		}
		var found []jwt.VerificationKey
		switch k := got.(type) {
		case jwt.VerificationKeySet:
			found = k.Keys
		case nil:
		default:
			found = []jwt.VerificationKey{k}
		}
		for _, k := range found {
			if keyAlg(k) == alg {
				set.Keys = append(set.Keys, k)
			}
		}
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("no key verifies %s", alg)
	}
	return set, nil
}

// APIKey reports whether key is one of the configured API keys. It
// compares SHA-256 digests in constant time against every key, so neither
// which key matched nor the keys' lengths show in the timing.
func (v *Verifier) APIKey(key string) bool {
	if v.mode == policy.AuthOff || key == "" {
		return false
	}
	d := sha256.Sum256([]byte(key))
	match := 0
	for i := range v.apiKeys {
		match |= subtle.ConstantTimeCompare(d[:], v.apiKeys[i][:])
	}
	return match == 1
}

// Close stops the JWKS refresh: it cancels the context the refresh
// goroutine (keyfunc's) selects on, which returns at once unless a fetch
// is under way, and then within that fetch's 5 s timeout. keyfunc offers
// no way to wait for it. Close is idempotent and returns nil.
func (v *Verifier) Close() error {
	v.closeOnce.Do(v.cancel)
	return nil
}
