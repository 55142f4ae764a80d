package internal_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestPackageDoc: every package of the module with non-test Go files
// under internal/ and cmd/ has a package comment that says what it owns
// (STYLE.md "Package map"), so that go doc and a reader opening the
// directory learn it without reading the code.
func TestPackageDoc(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Doc,GoFiles", module+"internal/...", module+"cmd/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	n := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Doc        string
			GoFiles    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if len(p.GoFiles) == 0 {
			continue // tests only, such as this package
		}
		n++
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc: add a doc.go saying what it owns and which SPEC section it implements", strings.TrimPrefix(p.ImportPath, module))
		}
	}
	if n < 10 {
		t.Fatalf("go list found %d packages with Go files; the pattern is wrong", n)
	}
}
