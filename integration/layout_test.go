package integration

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The module's layout rules (README, "Layout"), checked with the go tool
// itself so that a change that breaks one fails here, not in review.

const modulePath = "github.com/pushlog/pushlog"

// roles are the top-level packages that run as roles; none may import
// another's packages (the event schema and the node link are the only
// contracts between them).
var roles = []string{"ingest", "connector", "projector", "analytics"}

// listedPackage is what `go list -json` says of one package.
type listedPackage struct {
	ImportPath   string
	Dir          string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Deps         []string
	GoFiles      []string
}

func goList(t *testing.T, args ...string) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = moduleRoot(t)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(&out)
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// topOf is the first path element of a module package ("" outside the module).
func topOf(path string) string {
	rest, ok := strings.CutPrefix(path, modulePath+"/")
	if !ok {
		return ""
	}
	top, _, _ := strings.Cut(rest, "/")
	return top
}

func TestLayoutImports(t *testing.T) {
	for _, p := range goList(t, "./...") {
		from := topOf(p.ImportPath)
		all := slices.Concat(p.Imports, p.TestImports, p.XTestImports)
		for _, imp := range all {
			to := topOf(imp)
			if to == "" {
				continue
			}
			// Nothing outside cmd/ depends on a binary's code.
			if to == "cmd" && from != "cmd" {
				t.Errorf("%s imports %s: nothing under cmd/ may be imported outside cmd/", p.ImportPath, imp)
			}
			// A role imports no other role (its tests included).
			if slices.Contains(roles, from) && slices.Contains(roles, to) && from != to {
				t.Errorf("role package %s imports %s, another role's package", p.ImportPath, imp)
			}
		}
		if from == "schema" {
			checkSchemaImports(t, p)
		}
	}
}

// checkSchemaImports: the contract imports only the standard library,
// protobuf, franz-go and its own packages, so that every role (and every
// other implementation of the contract) can take it without more.
func checkSchemaImports(t *testing.T, p listedPackage) {
	t.Helper()
	allowed := func(imp string) bool {
		first, _, _ := strings.Cut(imp, "/")
		return !strings.Contains(first, ".") || // the standard library
			strings.HasPrefix(imp, "google.golang.org/protobuf/") ||
			strings.HasPrefix(imp, "github.com/twmb/franz-go/") ||
			strings.HasPrefix(imp, modulePath+"/schema")
	}
	for _, imp := range p.Imports {
		if !allowed(imp) {
			t.Errorf("contract package %s imports %s (only the standard library, protobuf and franz-go)", p.ImportPath, imp)
		}
	}
	for _, dep := range p.Deps {
		for _, banned := range []string{"github.com/prometheus/", "github.com/sony/gobreaker"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("contract package %s depends on %s", p.ImportPath, dep)
			}
		}
	}
}

// TestLayoutContexts: lifetimes come from Run(ctx). A context made from
// nothing outside a main function is a component that cancelling Run does
// not stop.
func TestLayoutContexts(t *testing.T) {
	fset := token.NewFileSet()
	for _, p := range goList(t, "./...") {
		for _, name := range p.GoFiles {
			path := filepath.Join(p.Dir, name)
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parser.ParseFile(fset, path, src, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, decl := range f.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if ok && fn.Recv == nil && fn.Name.Name == "main" && f.Name.Name == "main" {
					continue
				}
				ast.Inspect(decl, func(n ast.Node) bool {
					sel, ok := n.(*ast.SelectorExpr)
					if !ok {
						return true
					}
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == "context" && (sel.Sel.Name == "Background" || sel.Sel.Name == "TODO") {
						rel, _ := filepath.Rel(moduleRoot(t), path)
						t.Errorf("%s: context.%s outside a main function", fset.Position(sel.Pos()).String()[len(path)-len(rel):], sel.Sel.Name)
					}
					return true
				})
			}
		}
	}
}
