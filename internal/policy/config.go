package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/roomchat/roomchat/internal/protocol"
)

// AuthMode is §10's [auth] mode.
type AuthMode string

const (
	AuthOff      AuthMode = "off"
	AuthOptional AuthMode = "optional"
	AuthRequired AuthMode = "required"
)

// Auth is the resolved [auth] table (§10). Keys are named, never inline:
// package identity reads the environment variables and files.
type Auth struct {
	Mode                  AuthMode
	Algorithms            []string
	HMACSecretEnv         string
	PreviousHMACSecretEnv string
	PublicKeyFile         string // absolute, or relative to the working directory
	JWKSURL               string
	Issuer                string
	Audience              string
	Leeway                time.Duration
	APIKeysEnv            string
}

// Algorithms a token may be signed with (§10); never "none".
var Algorithms = []string{"HS256", "RS256", "ES256", "EdDSA"}

// Config is one loaded configuration: every namespace's effective policy
// and the auth settings. It is never modified after Load.
type Config struct {
	// File is the path it was read from; "" for the built-in layer only.
	File       string
	Defaults   Policy
	Namespaces map[string]*Policy
	Auth       Auth
	hash       string
}

// Lookup returns the policy that governs roomID: its namespace's, or the
// defaults for a room without one. A namespace the configuration does not
// name is unknown_namespace. roomID must already be valid
// (protocol.Limits.CheckRoomID).
func (c *Config) Lookup(roomID string) (*Policy, *protocol.Error) {
	ns, _ := protocol.SplitRoomID(roomID)
	if ns == "" {
		return &c.Defaults, nil
	}
	if p, ok := c.Namespaces[ns]; ok {
		return p, nil
	}
	return nil, protocol.Errorf(protocol.CodeUnknownNamespace, "no namespace %q is configured", ns)
}

// Hash is a short digest of the effective policy (the text WriteTo
// prints), the same on every node that loaded the same effective file.
func (c *Config) Hash() string { return c.hash }

// Builtin returns a Config with no file: every room gets base, no
// namespace exists, auth is off. This is §4–§8's behaviour.
func BuiltinConfig(base Policy) *Config {
	c := &Config{Defaults: base, Namespaces: map[string]*Policy{}, Auth: defaultAuth()}
	c.Defaults.Namespace = ""
	c.hash = c.digest()
	return c
}

func defaultAuth() Auth {
	return Auth{
		Mode:          AuthOff,
		HMACSecretEnv: "ROOMCHAT_JWT_SECRET",
		Leeway:        5 * time.Second,
		APIKeysEnv:    "ROOMCHAT_API_KEYS",
	}
}

// Load reads and checks the file at path over the built-in layer base. Its
// error is one line: "file:line: key: what is wrong".
func Load(path string, base Policy) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, base)
}

// Parse is Load on data already read; name is used in errors and to
// resolve relative file names.
func Parse(name string, data []byte, base Policy) (*Config, error) {
	var raw rawFile
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, decodeError(name, err)
	}
	lines := keyLines(data)
	fail := func(key, format string, args ...any) error {
		return &Error{File: name, Line: lines.find(key), Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	c := &Config{File: name, Namespaces: map[string]*Policy{}}
	base.Namespace = ""
	def, err := raw.Defaults.apply(base, "defaults", fail)
	if err != nil {
		return nil, err
	}
	c.Defaults = def
	for _, ns := range slices.Sorted(maps.Keys(raw.Namespace)) {
		rp := raw.Namespace[ns]
		key := "namespace." + ns
		if !protocol.CheckNamespace(ns) {
			return nil, fail(key, "a namespace name is %d to %d characters from A-Z, a-z, 0-9, _ and -", protocol.MinNamespace, protocol.MaxNamespace)
		}
		p, err := rp.apply(def, key, fail)
		if err != nil {
			return nil, err
		}
		p.Namespace = ns
		c.Namespaces[ns] = &p
	}
	if c.Auth, err = raw.Auth.resolve(filepath.Dir(name), fail); err != nil {
		return nil, err
	}
	c.hash = c.digest()
	return c, nil
}

// Error is a configuration error: one line naming the file, the line and
// the key.
type Error struct {
	File string
	Line int // 0 when unknown
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// decodeError turns go-toml's errors (syntax, unknown key, wrong type)
// into one Error line.
func decodeError(name string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := &strict.Errors[0]
		line, _ := e.Position()
		msg := "unknown key"
		if n := len(strict.Errors); n > 1 {
			msg = fmt.Sprintf("unknown key (and %d more)", n-1)
		}
		return &Error{File: name, Line: line, Key: strings.Join(e.Key(), "."), Msg: msg}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		return &Error{File: name, Line: line, Key: strings.Join(de.Key(), "."), Msg: strings.TrimPrefix(de.Error(), "toml: ")}
	}
	return &Error{File: name, Msg: err.Error()}
}

type failFunc func(key, format string, args ...any) error

type rawFile struct {
	Defaults  rawPolicy            `toml:"defaults"`
	Namespace map[string]rawPolicy `toml:"namespace"`
	Auth      rawAuth              `toml:"auth"`
}

type rawPolicy struct {
	Join      *string     `toml:"join"`
	Post      *string     `toml:"post"`
	History   *rawHistory `toml:"history"`
	Presence  *bool       `toml:"presence"`
	JoinLeave *bool       `toml:"join_leave"`
	Typing    *bool       `toml:"typing"`
	Events    *bool       `toml:"events"`
	Capacity  *int64      `toml:"capacity"`
	Rate      *number     `toml:"rate"`
	Burst     *int64      `toml:"burst"`
	RedactOwn *string     `toml:"redact_own"`
}

type rawHistory struct {
	Size *int64  `toml:"size"`
	Age  *string `toml:"age"`
}

// number takes a TOML integer or float (rate = 5 and rate = 0.5).
type number float64

func (n *number) UnmarshalText(b []byte) error {
	f, err := strconv.ParseFloat(strings.ReplaceAll(string(b), "_", ""), 64)
	if err != nil {
		return fmt.Errorf("%q is not a number", b)
	}
	*n = number(f)
	return nil
}

// Bounds on values: generous, but a typo of three zeros is caught.
const (
	maxCapacity    = 1_000_000
	maxHistorySize = 10_000_000
	maxBurst       = 1_000_000
	maxRate        = 1_000_000
)

// apply returns base with every field rp sets replaced, checked. It is a
// table, one short check a field in the order of the policy table's keys
// (SPEC's configuration file), and reads best as one.
func (rp rawPolicy) apply(base Policy, table string, fail failFunc) (Policy, error) {
	p := base
	key := func(k string) string { return table + "." + k }
	if rp.Join != nil {
		switch JoinRule(*rp.Join) {
		case JoinOpen, JoinToken:
			p.Join = JoinRule(*rp.Join)
		default:
			return p, fail(key("join"), `%q is not one of "open", "token"`, *rp.Join)
		}
	}
	if rp.Post != nil {
		switch PostRule(*rp.Post) {
		case PostMembers, PostModerators, PostAPI:
			p.Post = PostRule(*rp.Post)
		default:
			return p, fail(key("post"), `%q is not one of "members", "moderators", "api"`, *rp.Post)
		}
	}
	if h := rp.History; h != nil {
		if h.Size != nil {
			if *h.Size < 0 || *h.Size > maxHistorySize {
				return p, fail(key("history.size"), "%d is not between 0 and %d", *h.Size, maxHistorySize)
			}
			p.HistorySize = int(*h.Size)
		}
		if h.Age != nil {
			d, err := parseDuration(*h.Age)
			if err != nil {
				return p, fail(key("history.age"), "%v", err)
			}
			p.HistoryAge = d
		}
	}
	setBool(&p.Presence, rp.Presence)
	setBool(&p.JoinLeave, rp.JoinLeave)
	setBool(&p.Typing, rp.Typing)
	setBool(&p.Events, rp.Events)
	if rp.Capacity != nil {
		if *rp.Capacity < 1 || *rp.Capacity > maxCapacity {
			return p, fail(key("capacity"), "%d is not between 1 and %d", *rp.Capacity, maxCapacity)
		}
		p.Capacity = int(*rp.Capacity)
	}
	if rp.Rate != nil {
		if r := float64(*rp.Rate); r < 0 || r > maxRate || r != r {
			return p, fail(key("rate"), "%v is not between 0 (no limit) and %d", r, maxRate)
		}
		p.Rate = float64(*rp.Rate)
	}
	if rp.Burst != nil {
		if *rp.Burst < 1 || *rp.Burst > maxBurst {
			return p, fail(key("burst"), "%d is not between 1 and %d", *rp.Burst, maxBurst)
		}
		p.Burst = int(*rp.Burst)
	}
	if rp.RedactOwn != nil {
		switch s := *rp.RedactOwn; s {
		case "never":
			p.RedactOwn = RedactNever
		case "always":
			p.RedactOwn = RedactAlways
		default:
			d, err := parseDuration(s)
			if err != nil || d <= 0 {
				return p, fail(key("redact_own"), `%q is not "never", "always" or a duration such as "15m"`, s)
			}
			p.RedactOwn = d
		}
	}
	return p, nil
}

func setBool(dst *bool, v *bool) {
	if v != nil {
		*dst = *v
	}
}

// parseDuration is time.ParseDuration, refusing negative durations.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf(`%q is not a duration such as "90s", "15m" or "720h"`, s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

type rawAuth struct {
	Mode                  *string  `toml:"mode"`
	Algorithms            []string `toml:"algorithms"`
	HMACSecretEnv         *string  `toml:"hmac_secret_env"`
	PreviousHMACSecretEnv *string  `toml:"previous_hmac_secret_env"`
	PublicKeyFile         *string  `toml:"public_key_file"`
	JWKSURL               *string  `toml:"jwks_url"`
	Issuer                *string  `toml:"issuer"`
	Audience              *string  `toml:"audience"`
	Leeway                *string  `toml:"leeway"`
	APIKeysEnv            *string  `toml:"api_keys_env"`
}

func (ra rawAuth) resolve(dir string, fail failFunc) (Auth, error) {
	a := defaultAuth()
	if ra.Mode != nil {
		switch m := AuthMode(*ra.Mode); m {
		case AuthOff, AuthOptional, AuthRequired:
			a.Mode = m
		default:
			return a, fail("auth.mode", `%q is not one of "off", "optional", "required"`, *ra.Mode)
		}
	}
	for _, alg := range ra.Algorithms {
		if !slices.Contains(Algorithms, alg) {
			return a, fail("auth.algorithms", "%q is not one of %s", alg, strings.Join(quoted(Algorithms), ", "))
		}
		if !slices.Contains(a.Algorithms, alg) {
			a.Algorithms = append(a.Algorithms, alg)
		}
	}
	setString(&a.HMACSecretEnv, ra.HMACSecretEnv)
	setString(&a.PreviousHMACSecretEnv, ra.PreviousHMACSecretEnv)
	setString(&a.PublicKeyFile, ra.PublicKeyFile)
	setString(&a.JWKSURL, ra.JWKSURL)
	setString(&a.Issuer, ra.Issuer)
	setString(&a.Audience, ra.Audience)
	setString(&a.APIKeysEnv, ra.APIKeysEnv)
	if a.PublicKeyFile != "" && !filepath.IsAbs(a.PublicKeyFile) {
		a.PublicKeyFile = filepath.Join(dir, a.PublicKeyFile)
	}
	if ra.Leeway != nil {
		d, err := parseDuration(*ra.Leeway)
		if err != nil {
			return a, fail("auth.leeway", "%v", err)
		}
		if d > 5*time.Minute {
			return a, fail("auth.leeway", "%s is more than 5m: an expired token would stay valid that long", d)
		}
		a.Leeway = d
	}
	if a.JWKSURL != "" && !strings.HasPrefix(a.JWKSURL, "https://") && !strings.HasPrefix(a.JWKSURL, "http://") {
		return a, fail("auth.jwks_url", "%q is not an http(s) URL", a.JWKSURL)
	}
	if a.Mode == AuthOff {
		return a, nil
	}
	if len(a.Algorithms) == 0 {
		return a, fail("auth.algorithms", "is required when mode is %q: list the algorithms tokens may be signed with", a.Mode)
	}
	for _, alg := range a.Algorithms {
		switch {
		case alg == "HS256" && a.JWKSURL != "":
			return a, fail("auth.algorithms", `"HS256" cannot be used with jwks_url: a JWKS publishes public keys, so only RS256, ES256 and EdDSA are accepted`)
		case alg == "HS256" && a.HMACSecretEnv == "":
			return a, fail("auth.hmac_secret_env", `must name an environment variable when "HS256" is allowed`)
		case alg != "HS256" && a.PublicKeyFile == "" && a.JWKSURL == "":
			return a, fail("auth.public_key_file", "must name a PEM file (or set jwks_url) when %q is allowed", alg)
		}
	}
	return a, nil
}

func setString(dst *string, v *string) {
	if v != nil {
		*dst = *v
	}
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// WriteTo prints the effective configuration as TOML (what
// roomchatd -check-config shows): every field of every namespace, nothing
// left to inheritance. It is also what Hash digests.
func (c *Config) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	src := c.File
	if src == "" {
		src = "built-in defaults (no -config file)"
	}
	fmt.Fprintf(&b, "# effective policy of %s, hash %s\n", src, c.hash)
	c.body(&b)
	n, err := w.Write(b.Bytes())
	return int64(n), err
}

func (c *Config) body(b *bytes.Buffer) {
	a := c.Auth
	fmt.Fprintf(b, "\n[auth]\nmode = %q\nalgorithms = [%s]\n", a.Mode, strings.Join(quoted(a.Algorithms), ", "))
	for _, kv := range [][2]string{
		{"hmac_secret_env", a.HMACSecretEnv}, {"previous_hmac_secret_env", a.PreviousHMACSecretEnv},
		{"public_key_file", a.PublicKeyFile}, {"jwks_url", a.JWKSURL}, {"issuer", a.Issuer},
		{"audience", a.Audience}, {"leeway", a.Leeway.String()}, {"api_keys_env", a.APIKeysEnv},
	} {
		fmt.Fprintf(b, "%s = %q\n", kv[0], kv[1])
	}
	b.WriteString("\n[defaults]\n")
	c.Defaults.writeTo(b)
	for _, ns := range slices.Sorted(maps.Keys(c.Namespaces)) {
		fmt.Fprintf(b, "\n[namespace.%s]\n", ns)
		c.Namespaces[ns].writeTo(b)
	}
}

func (p *Policy) writeTo(b *bytes.Buffer) {
	redact := p.RedactOwn.String()
	switch p.RedactOwn {
	case RedactNever:
		redact = "never"
	case RedactAlways:
		redact = "always"
	}
	fmt.Fprintf(b, "join = %q\npost = %q\nhistory = { size = %d, age = %q }\n", p.Join, p.Post, p.HistorySize, p.HistoryAge)
	fmt.Fprintf(b, "presence = %t\njoin_leave = %t\ntyping = %t\nevents = %t\n", p.Presence, p.JoinLeave, p.Typing, p.Events)
	fmt.Fprintf(b, "capacity = %d\nrate = %s\nburst = %d\nredact_own = %q\n", p.Capacity, strconv.FormatFloat(p.Rate, 'f', -1, 64), p.Burst, redact)
}

func (c *Config) digest() string {
	var b bytes.Buffer
	c.body(&b)
	sum := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:6])
}

// lineIndex maps a dotted key ("namespace.news.post") to the line it is
// on, so that a bad value is reported where it was written.
type lineIndex map[string]int

func (li lineIndex) find(key string) int {
	for k := key; k != ""; {
		if l, ok := li[k]; ok {
			return l
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// keyLines indexes every key of a document that already decoded.
func keyLines(data []byte) lineIndex {
	li := lineIndex{}
	line := func(off uint32) int { return bytes.Count(data[:off], []byte{'\n'}) + 1 }
	var p unstable.Parser
	p.Reset(data)
	var table []string
	var record func(prefix []string, kv *unstable.Node)
	record = func(prefix []string, kv *unstable.Node) {
		k := slices.Clone(prefix)
		var off uint32
		for it := kv.Key(); it.Next(); {
			k = append(k, string(it.Node().Data))
			off = it.Node().Raw.Offset
		}
		li[strings.Join(k, ".")] = line(off)
		if v := kv.Value(); v != nil && v.Kind == unstable.InlineTable {
			for it := v.Children(); it.Next(); {
				if n := it.Node(); n.Kind == unstable.KeyValue {
					record(k, n)
				}
			}
		}
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = table[:0]
			var off uint32
			for it := e.Key(); it.Next(); {
				table = append(table, string(it.Node().Data))
				off = it.Node().Raw.Offset
			}
			li[strings.Join(table, ".")] = line(off)
		case unstable.KeyValue:
			record(table, e)
		}
	}
	return li
}

// Source holds the Config in force; a reload swaps it, and the next
// action of every connection reads the new one. The zero Source is not
// usable: build one with NewSource.
type Source struct {
	cur atomic.Pointer[Config]
}

// NewSource returns a Source holding c.
func NewSource(c *Config) *Source {
	s := &Source{}
	s.cur.Store(c)
	return s
}

// Config returns the Config in force.
func (s *Source) Config() *Config { return s.cur.Load() }

// Swap puts c in force.
func (s *Source) Swap(c *Config) { s.cur.Store(c) }

// RoomRetention gives roomID its namespace's history size and age (SPEC
// §9) from the Config in force, for store.Retention.Room: after a reload
// the store's next trim follows the new file. A room whose namespace a
// reload removed keeps the defaults'.
func (s *Source) RoomRetention(roomID string) (int, time.Duration) {
	c := s.Config()
	p, perr := c.Lookup(roomID)
	if perr != nil {
		p = &c.Defaults
	}
	return p.HistorySize, p.HistoryAge
}
