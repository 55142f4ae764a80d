package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
)

func base() Policy { return Builtin(protocol.DefaultLimits(), 10000, 0) }

// example is SPEC §10's example file.
const example = `[auth]
mode = "optional"                      # off | optional | required
algorithms = ["HS256", "RS256"]        # the allow-list
hmac_secret_env = "ROOMCHAT_JWT_SECRET"
previous_hmac_secret_env = ""          # rotation: tokens signed with the previous key still verify
public_key_file = "keys/jwt.pem"       # PEM, for RS256 / ES256 / EdDSA
jwks_url = ""                          # then only asymmetric algorithms are accepted
issuer = ""                            # checked when set
audience = ""                          # checked when set
leeway = "5s"
api_keys_env = "ROOMCHAT_API_KEYS"     # comma-separated keys for the HTTP API and moderation

[defaults]
post = "members"

[namespace.news]                       # an announcement namespace
post = "moderators"
join_leave = false

[namespace.staff]                      # private rooms
join = "token"
history = { size = 1000, age = "720h" }
`

func TestParseExample(t *testing.T) {
	c, err := Parse("/etc/roomchat/roomchat.toml", []byte(example), base())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Auth.PublicKeyFile, "/etc/roomchat/keys/jwt.pem"; got != want {
		t.Errorf("public_key_file = %q, want %q (relative to the file)", got, want)
	}
	news, perr := c.Lookup("news:abc")
	if perr != nil {
		t.Fatal(perr)
	}
	if news.Post != PostModerators || news.JoinLeave || !news.Presence || news.Join != JoinOpen || news.HistorySize != 10000 {
		t.Errorf("news = %+v", news)
	}
	staff, _ := c.Lookup("staff:x")
	if staff.Join != JoinToken || staff.HistorySize != 1000 || staff.HistoryAge != 720*time.Hour || staff.Post != PostMembers {
		t.Errorf("staff = %+v", staff)
	}
	def, _ := c.Lookup("plain")
	if def.Namespace != "" || def.Post != PostMembers {
		t.Errorf("defaults = %+v", def)
	}
	if _, perr := c.Lookup("nope:x"); perr == nil || perr.Code != protocol.CodeUnknownNamespace {
		t.Errorf("Lookup(nope:x) = %v, want unknown_namespace", perr)
	}
}

// TestInheritFieldByField: a namespace inherits every field of [defaults]
// it does not set, including one half of the history table, and
// [defaults] inherits the built-in layer that flags set.
func TestInheritFieldByField(t *testing.T) {
	b := base()
	b.Capacity = 77 // as -room-capacity would set it
	c, err := Parse("x.toml", []byte(`
[defaults]
typing = false
history = { size = 500, age = "1h" }
rate = 2

[namespace.aa]
history = { age = "10m" }
rate = 0.5
`), b)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Namespaces["aa"]
	want := Policy{Namespace: "aa", Join: JoinOpen, Post: PostMembers, HistorySize: 500, HistoryAge: 10 * time.Minute,
		Presence: true, JoinLeave: true, Typing: false, Events: true, Capacity: 77, Rate: 0.5, Burst: b.Burst, RedactOwn: RedactAlways}
	if *a != want {
		t.Errorf("namespace aa =\n%+v, want\n%+v", *a, want)
	}
	if c.Defaults.Rate != 2 || c.Defaults.Capacity != 77 || c.Defaults.Typing {
		t.Errorf("defaults = %+v", c.Defaults)
	}
}

// TestConfigErrors: every mistake is one line naming the file, the line
// and the key.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"typo in a namespace", "[namespace.news]\npost = \"moderators\"\njoin_leav = false\n", "f.toml:3: namespace.news.join_leav: unknown key"},
		{"typo in defaults", "[defaults]\n\npresense = false\n", "f.toml:3: defaults.presense: unknown key"},
		{"unknown table", "[default]\npost = \"members\"\n", "f.toml:1: default: unknown key"},
		{"bad enum", "[namespace.news]\n\npost = \"moderator\"\n", `f.toml:3: namespace.news.post: "moderator" is not one of "members", "moderators", "api"`},
		{"bad type", "[defaults]\ncapacity = \"ten\"\n", "f.toml:2: defaults.capacity:"},
		{"bad bool", "[defaults]\ntyping = 1\n", "f.toml:2: defaults.typing:"},
		{"bad duration", "[namespace.ss]\nhistory = { size = 1, age = \"30 days\" }\n", `f.toml:2: namespace.ss.history.age: "30 days" is not a duration`},
		{"negative size", "[defaults]\nhistory = { size = -1 }\n", "f.toml:2: defaults.history.size: -1 is not between 0 and"},
		{"zero capacity", "[defaults]\ncapacity = 0\n", "f.toml:2: defaults.capacity: 0 is not between 1 and"},
		{"bad redact_own", "[defaults]\nredact_own = \"sometimes\"\n", `f.toml:2: defaults.redact_own: "sometimes" is not "never", "always" or a duration`},
		{"bad namespace name", "[namespace.x]\npost = \"api\"\n", "f.toml:1: namespace.x: a namespace name is 2 to 32 characters"},
		{"syntax", "[defaults\n", "f.toml:1"},
		{"bad mode", "[auth]\nmode = \"on\"\n", `f.toml:2: auth.mode: "on" is not one of "off", "optional", "required"`},
		{"alg none", "[auth]\nmode = \"optional\"\nalgorithms = [\"none\"]\n", `f.toml:3: auth.algorithms: "none" is not one of`},
		{"no algorithms", "[auth]\nmode = \"required\"\n", `f.toml:1: auth.algorithms: is required when mode is "required"`},
		{"hmac with jwks", "[auth]\nmode = \"optional\"\nalgorithms = [\"HS256\"]\njwks_url = \"https://idp.example/jwks\"\n", `f.toml:3: auth.algorithms: "HS256" cannot be used with jwks_url`},
		{"rsa without key", "[auth]\nmode = \"optional\"\nalgorithms = [\"RS256\"]\n", `f.toml:1: auth.public_key_file: must name a PEM file`},
		{"long leeway", "[auth]\nleeway = \"1h\"\n", `f.toml:2: auth.leeway: 1h0m0s is more than 5m`},
		{"unknown auth key", "[auth]\nsecret = \"abc\"\n", "f.toml:2: auth.secret: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(tc.doc), base())
			if err == nil {
				t.Fatalf("Parse succeeded, want an error starting %q", tc.want)
			}
			if got := err.Error(); !strings.HasPrefix(got, tc.want) || strings.Contains(got, "\n") {
				t.Errorf("error = %q, want one line starting %q", got, tc.want)
			}
		})
	}
}

func TestWriteToRoundTrips(t *testing.T) {
	c, err := Parse("a.toml", []byte(example), base())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := c.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[namespace.news]\njoin = \"open\"\npost = \"moderators\"", "join_leave = false", "[namespace.staff]\njoin = \"token\"", "history = { size = 1000, age = \"720h0m0s\" }", "hash " + c.Hash()} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out.String())
		}
	}
	// The printed effective policy is itself a valid file, and loads to
	// the same policy: same hash.
	again, err := Parse("b.toml", out.Bytes(), base())
	if err != nil {
		t.Fatalf("effective policy does not load: %v\n%s", err, out.String())
	}
	if again.Hash() != c.Hash() {
		t.Errorf("hash after round trip = %s, want %s", again.Hash(), c.Hash())
	}
	other, _ := Parse("c.toml", []byte(strings.Replace(example, `join_leave = false`, `join_leave = true`, 1)), base())
	if other.Hash() == c.Hash() {
		t.Error("two different policies have the same hash")
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomchat.toml")
	if err := os.WriteFile(path, []byte("[defaults]\nsize = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, base())
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: defaults.size: unknown key") {
		t.Errorf("Load = %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml"), base()); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestDecisions(t *testing.T) {
	c, err := Parse("f.toml", []byte(`
[namespace.news]
post = "moderators"
[namespace.feed]
post = "api"
typing = false
events = false
history = { size = 0 }
redact_own = "never"
[namespace.staff]
join = "token"
redact_own = "15m"
`), base())
	if err != nil {
		t.Fatal(err)
	}
	news, feed, staff, def := c.Namespaces["news"], c.Namespaces["feed"], c.Namespaces["staff"], &c.Defaults
	now := time.Now()
	for _, tc := range []struct {
		name string
		err  *protocol.Error
		want string // "" for allowed, else a substring of the message
	}{
		{"member posts in news", news.MayPost(RoleMember, false), `namespace "news": only moderators and owners may post (post = "moderators")`},
		{"moderator posts in news", news.MayPost(RoleModerator, false), ""},
		{"owner posts in feed over WS", feed.MayPost(RoleOwner, false), `(post = "api")`},
		{"API posts in feed", feed.MayPost(RoleMember, true), ""},
		{"typing in feed", feed.MayType(), "(typing = false)"},
		{"event in feed", feed.MayEvent(), "(events = false)"},
		{"history in feed", feed.MayReadHistory(), "(history.size = 0)"},
		{"anonymous joins staff", staff.MayJoin(RoleNone), `namespace "staff": joining needs a token`},
		{"member joins staff", staff.MayJoin(RoleMember), ""},
		{"anonymous joins plain", def.MayJoin(RoleNone), ""},
		{"member posts in plain", def.MayPost(RoleMember, false), ""},
		{"redact own in feed", feed.MayRedactOwn(now, now), `(redact_own = "never")`},
		{"redact own in staff, fresh", staff.MayRedactOwn(now.Add(-time.Minute), now), ""},
		{"redact own in staff, old", staff.MayRedactOwn(now.Add(-16*time.Minute), now), "for 15m0s after sending"},
		{"redact own in plain", def.MayRedactOwn(now.Add(-1000*time.Hour), now), ""},
		{"run-time post policy", def.MayPostWith(PostModerators, RoleMember, false), "rooms without a namespace: only moderators"},
	} {
		switch {
		case tc.want == "" && tc.err != nil:
			t.Errorf("%s: %v, want allowed", tc.name, tc.err)
		case tc.want != "" && tc.err == nil:
			t.Errorf("%s: allowed, want %q", tc.name, tc.want)
		case tc.want != "" && !strings.Contains(tc.err.Message, tc.want):
			t.Errorf("%s: %q, want it to contain %q", tc.name, tc.err.Message, tc.want)
		case tc.err != nil && tc.err.Code != protocol.CodeForbidden && tc.err.Code != protocol.CodeHistoryDisabled:
			t.Errorf("%s: code %s", tc.name, tc.err.Code)
		}
	}
}

func TestSourceSwap(t *testing.T) {
	a := BuiltinConfig(base())
	s := NewSource(a)
	b, err := Parse("f.toml", []byte("[namespace.news]\n"), base())
	if err != nil {
		t.Fatal(err)
	}
	if _, perr := s.Config().Lookup("news:1"); perr == nil {
		t.Fatal("news exists before the swap")
	}
	s.Swap(b)
	if _, perr := s.Config().Lookup("news:1"); perr != nil {
		t.Fatalf("after the swap: %v", perr)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("[defaults]\nhistory = { size = 0 }\n[namespace.ab]\nrate = 1e3\n"))
	f.Add([]byte("[namespace.\"a b\"]\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse("f.toml", doc, base())
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		// Whatever loads prints an effective policy that loads again to
		// the same hash.
		var out bytes.Buffer
		c.WriteTo(&out)
		again, err := Parse("g.toml", out.Bytes(), base())
		if err != nil {
			t.Fatalf("effective policy does not load: %v\n%s", err, out.String())
		}
		if again.Hash() != c.Hash() {
			t.Fatalf("hash changed on round trip:\n%s", out.String())
		}
	})
}
