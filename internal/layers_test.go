package internal_test

import (
	"encoding/json"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// module is the module path; the rules below name packages relative to it.
const module = "github.com/roomchat/roomchat/"

// layers says which of the module's packages each package may import
// (without _test files): cmd → server → room → broker → store → protocol,
// and the client side never imports the server side. A package the table
// does not know fails the test: a new package gets a rule when it is
// added. A trailing "/..." matches a package and everything under it.
var layers = map[string][]string{
	"internal":                 {}, // this test
	"internal/protocol":        {},
	"internal/store":           {"internal/protocol"},
	"internal/store/sqlite":    {"internal/protocol", "internal/store"},
	"internal/store/storetest": {"internal/protocol", "internal/store"},
	"internal/broker":          {"internal/protocol", "internal/store"},
	"internal/broker/...":      {"internal/protocol", "internal/store", "internal/broker", "internal/store/..."},
	"internal/cluster":         {"internal/protocol", "internal/store", "internal/broker"},
	"internal/policy":          {"internal/protocol"},
	"internal/identity":        {"internal/policy", "internal/protocol"},
	"internal/identity/...":    {"internal/identity", "internal/policy", "internal/protocol"}, // identitytest: tests only
	"internal/redistest":       {},
	"internal/proc":            {},
	"internal/chart":           {},
	"internal/room":            {"internal/protocol", "internal/store", "internal/broker", "internal/policy"},
	"internal/wsconn":          {},
	"internal/server":          {"internal/protocol", "internal/store", "internal/broker", "internal/room", "internal/wsconn", "internal/policy", "internal/identity"},
	"internal/client":          {"internal/protocol"},
	"internal/client/...":      {"internal/protocol", "internal/client"},
	"internal/chattest":        {"internal/protocol", "internal/client", "internal/store", "internal/server", "internal/room", "internal/policy", "internal/identity"}, // tests only: TestOnlyTestsImport
	"web":                      {},
	"cmd/roomchat":             {"internal/protocol", "internal/client"},
	"cmd/roomchat-bench/...":   {"internal/protocol", "internal/client", "internal/proc", "internal/chart", "cmd/roomchat-bench/..."},
	"cmd/roomchatd":            {"internal/...", "web"},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		allowed, ok := rule(name)
		if !ok {
			t.Errorf("%s: no rule in layers; say what it may import", name)
			continue
		}
		for _, imp := range p.Imports {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if !slices.ContainsFunc(allowed, func(pattern string) bool { return match(pattern, dep) }) {
				t.Errorf("%s imports %s: the layers allow only %v", name, dep, allowed)
			}
		}
	}
}

// rule returns the allowed imports of package name: its own entry, or the
// nearest "dir/..." entry above it.
func rule(name string) ([]string, bool) {
	if r, ok := layers[name]; ok {
		return r, true
	}
	for dir := name; dir != "." && dir != "/"; dir = path.Dir(dir) {
		if r, ok := layers[dir+"/..."]; ok {
			return r, true
		}
	}
	return nil, false
}

func match(pattern, name string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/..."); ok {
		return name == dir || strings.HasPrefix(name, dir+"/")
	}
	return pattern == name
}

// TestLayerRules checks the checker: a server import from the client side
// and a room import from the store are refused, a package under cmd's
// bench tool is covered by its "/..." rule.
func TestLayerRules(t *testing.T) {
	allowed := func(pkg, dep string) bool {
		r, ok := rule(pkg)
		return ok && slices.ContainsFunc(r, func(p string) bool { return match(p, dep) })
	}
	for _, c := range []struct {
		pkg, dep string
		want     bool
	}{
		{"internal/client", "internal/server", false},
		{"internal/client/clienttest", "internal/room", false},
		{"internal/store", "internal/room", false},
		{"internal/room", "internal/server", false},
		{"internal/server", "internal/room", true},
		{"internal/server", "internal/wsconn", true},
		{"internal/wsconn", "internal/protocol", false},
		{"internal/identity", "internal/policy", true},
		{"internal/policy", "internal/identity", false},
		{"internal/identity", "internal/server", false},
		{"internal/identity/identitytest", "internal/room", false},
		{"internal/server", "internal/identity", true},
		{"cmd/roomchatd", "internal/store/sqlite", true},
		{"cmd/roomchat-bench/report", "cmd/roomchat-bench/relay", true},
		{"cmd/roomchat-bench/report", "internal/server", false},
	} {
		if got := allowed(c.pkg, c.dep); got != c.want {
			t.Errorf("%s importing %s: allowed %v, want %v", c.pkg, c.dep, got, c.want)
		}
	}
	if _, ok := rule("internal/brand-new"); ok {
		t.Error("a package without a rule was given one")
	}
}
