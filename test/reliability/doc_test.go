// Package reliability keeps docs/reliability.md honest: every test it names
// must exist, and every fault and fuzz test must be in it.
package reliability

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

var (
	repoRoot = filepath.Join("..", "..")
	doc      = filepath.Join("docs", "reliability.md")
	// documented are the packages whose every test and fuzz target the
	// document must name.
	documented = []string{filepath.Join("test", "faults"), filepath.Join("test", "fuzz")}
)

// testName is a test or fuzz target in backquotes, e.g. `TestAgentLifecycle`
// or `TestAgentLifecycle/kill -9 keeps the rules (fail-static)`.
var testName = regexp.MustCompile("`((?:Test|Fuzz)[A-Z0-9_][A-Za-z0-9_]*)(?:/[^`]*)?`")

// testFuncs maps every top-level Test and Fuzz function of the module's
// _test.go files to the directories that declare one of that name.
func testFuncs(t *testing.T) map[string][]string {
	t.Helper()
	funcs := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "testdata", "vendor", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, filepath.Dir(path))
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil {
				continue
			}
			if name := fn.Name.Name; strings.HasPrefix(name, "Test") || strings.HasPrefix(name, "Fuzz") {
				funcs[name] = append(funcs[name], rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the tests: %v", err)
	}
	return funcs
}

func docNames(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, doc))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var names []string
	for _, m := range testName.FindAllStringSubmatch(string(raw), -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			names = append(names, m[1])
		}
	}
	return names
}

// TestReliabilityDocNamesExistingTests fails for each test the document
// names that no _test.go file of the module declares.
func TestReliabilityDocNamesExistingTests(t *testing.T) {
	funcs := testFuncs(t)
	names := docNames(t)
	// A document that names (almost) nothing would pass trivially.
	if len(names) < 30 {
		t.Fatalf("%s names %d tests; the regexp %s no longer finds them", doc, len(names), testName)
	}
	for _, name := range names {
		if len(funcs[name]) == 0 {
			t.Errorf("%s names %s, which no _test.go file declares", doc, name)
		}
	}
	if !t.Failed() {
		t.Logf("%s names %d tests, all declared", doc, len(names))
	}
}

// TestFaultAndFuzzTestsAreDocumented fails for each test or fuzz target of
// the fault and fuzz packages that the document leaves out.
func TestFaultAndFuzzTestsAreDocumented(t *testing.T) {
	names := docNames(t)
	var missing []string
	for name, dirs := range testFuncs(t) {
		if name == "TestMain" || slices.Contains(names, name) {
			continue
		}
		for _, d := range dirs {
			if slices.Contains(documented, d) {
				missing = append(missing, name+" ("+d+")")
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("%s does not name %s", doc, m)
	}
}
