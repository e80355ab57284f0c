package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/alecthomas/kong"
)

// readmePath is the README every test here keeps true.
const readmePath = "../../README.md"

func readReadme(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(readme)
}

// testParser builds the CLI as main does, so the README is checked against
// the real command line (flags other work adds included).
func testParser(t *testing.T) *kong.Kong {
	t.Helper()
	var c cli
	parser, err := newParser(&c, io.Discard, io.Discard, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	return parser
}

// TestReadmeConfigurationTable keeps the README's settings table true: every
// flag and variable it names must be one serve accepts, and every serve
// flag must be in the table (the README is what operators read).
func TestReadmeConfigurationTable(t *testing.T) {
	readme := readReadme(t)
	parser := testParser(t)
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, node := range parser.Model.Children {
		if node.Name != "serve" {
			continue
		}
		for _, f := range node.AllFlags(true) {
			for _, fl := range f {
				flags["--"+fl.Name] = true
				for _, e := range fl.Envs {
					envs[e] = true
				}
			}
		}
	}
	if len(flags) == 0 {
		t.Fatal("serve has no flags in the kong model")
	}
	section := readme
	start := strings.Index(section, "## Configuration")
	if start < 0 {
		t.Fatal("README has no Configuration section")
	}
	section = section[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	row := regexp.MustCompile("(?m)^\\| (`--[^|]+) \\| ([^|]+) \\|")
	named := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		for _, f := range regexp.MustCompile("`(--[a-z0-9-]+)`").FindAllStringSubmatch(m[1], -1) {
			named[f[1]] = true
			if !flags[f[1]] {
				t.Errorf("README names flag %s, which serve does not have", f[1])
			}
		}
		for _, e := range regexp.MustCompile("`([A-Z][A-Z0-9_]+)`").FindAllStringSubmatch(m[2], -1) {
			if !envs[e[1]] {
				t.Errorf("README names variable %s, which serve does not read", e[1])
			}
		}
	}
	for f := range flags {
		if f == "--help" || f == "--version" || strings.HasPrefix(f, "--log-") && named["--log-format"] {
			continue
		}
		if !named[f] {
			t.Errorf("serve flag %s is missing from the README's configuration table", f)
		}
	}
}

// TestReadmeConfigurationDefaults: a default the Configuration table gives
// as a value (`15s`, `127.0.0.1:8082`) is serve's default; a row of several
// flags gives one value per flag. Words ("none", "(empty: …)") are not
// compared.
func TestReadmeConfigurationDefaults(t *testing.T) {
	readme := readReadme(t)
	defaults := map[string]string{}
	for _, node := range testParser(t).Model.Children {
		if node.Name != "serve" {
			continue
		}
		for _, group := range node.AllFlags(true) {
			for _, fl := range group {
				if fl.HasDefault && fl.Default != "" {
					defaults["--"+fl.Name] = fl.Default
				}
			}
		}
	}
	start := strings.Index(readme, "## Configuration")
	if start < 0 {
		t.Fatal("README has no Configuration section")
	}
	section := readme[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	code := regexp.MustCompile("`([^`]+)`")
	compared := 0
	for _, m := range regexp.MustCompile("(?m)^\\| (`--[^|]+) \\| [^|]+ \\| ([^|]+) \\|").FindAllStringSubmatch(section, -1) {
		var flags []string
		for _, f := range code.FindAllStringSubmatch(m[1], -1) {
			flags = append(flags, f[1])
		}
		cell := strings.TrimSpace(m[2])
		if !strings.HasPrefix(cell, "`") {
			continue
		}
		values := code.FindAllStringSubmatch(cell, -1)
		for i, f := range flags {
			want, ok := defaults[f]
			if !ok || i >= len(values) {
				continue
			}
			compared++
			if got := values[i][1]; !sameDefault(got, want) {
				t.Errorf("README's Configuration table gives %s the default %q; serve's is %q", f, got, want)
			}
		}
	}
	if compared == 0 {
		t.Fatal("compared no default: the table's format changed?")
	}
}

// sameDefault: equal as written, or as durations (300s = 5m).
func sameDefault(readme, kong string) bool {
	if readme == kong {
		return true
	}
	a, errA := time.ParseDuration(readme)
	b, errB := time.ParseDuration(kong)
	return errA == nil && errB == nil && a == b
}

// TestReadmeNamesOnlyWhatExists: every `pushlog <subcommand>`, every flag
// (spelled as users type it) and every PUSHLOG_*/KAFKA_*/CLICKHOUSE_*
// variable the README names must exist. pushlog's commands and flags come
// from its kong model: a flag after `pushlog <sub>` in a command must be one
// of that subcommand (or global); a flag standing alone in prose must be one
// of some pushlog subcommand or of pushattack/pushload (asked with --help).
// Flags of other programs (go, curl, docker, npm, kafka scripts, …) are
// skipped by the program that precedes them. A variable is either one the
// CLI reads or one a script or test of the repository uses.
func TestReadmeNamesOnlyWhatExists(t *testing.T) {
	readme := readReadme(t)
	idx := newCLIIndex(testParser(t))
	ck := &readmeChecker{idx: idx, tools: map[string]map[string]bool{}, t: t}

	blocks, prose := splitFences(readme)
	for _, b := range blocks {
		for _, l := range logicalLines(b.text) {
			ck.checkLine(l.text, b.line+l.line, false)
		}
	}
	for _, span := range inlineCode(prose) {
		ck.checkLine(span.text, span.line, true)
	}
	// Flags in plain prose (outside any code) are checked as lone flags.
	plain := stripInline(prose)
	for _, m := range regexp.MustCompile(`(?:^|[\s(])(--[a-z][a-z0-9-]*)`).FindAllStringSubmatchIndex(plain, -1) {
		ck.loneFlag(plain[m[2]:m[3]], lineOf(plain, m[2]))
	}
	if ck.checked == 0 {
		t.Fatal("found no pushlog command or flag in the README: the extraction is broken")
	}

	env := regexp.MustCompile(`\b(?:PUSHLOG|KAFKA|CLICKHOUSE)_[A-Z0-9_]*[A-Z0-9]\b`)
	var others []string
	for _, name := range uniq(env.FindAllString(readme, -1)) {
		if !idx.envs[name] {
			others = append(others, name)
		}
	}
	if len(others) > 0 {
		used := usedElsewhere(t, others)
		for _, name := range others {
			if !used[name] {
				t.Errorf("README names variable %s, which neither pushlog reads nor any script or test of the repository uses", name)
			}
		}
	}
}

// TestReadmePathsExist: every file or directory of the repository the
// README names (deploy/test.sh, analytics/queries/, integration/…_test.go)
// exists.
func TestReadmePathsExist(t *testing.T) {
	readme := readReadme(t)
	path := regexp.MustCompile("(?:^|[\\s(`=])(\\./)?((?:cmd|ingest|projector|connector|schema|analytics|deploy|integration|\\.ci)/[A-Za-z0-9_./-]*[A-Za-z0-9_/]|Dockerfile|docker-compose\\.yml)")
	n := 0
	for _, m := range path.FindAllStringSubmatchIndex(readme, -1) {
		name := readme[m[4]:m[5]]
		if strings.HasSuffix(readme[m[5]:min(m[5]+1, len(readme))], "{") {
			continue // cmd/internal/{a,b}: a set, not a path
		}
		if breakerNames[name] {
			continue
		}
		n++
		if _, err := os.Stat(filepath.Join("../..", name)); err != nil {
			t.Errorf("README line %d names %s, which does not exist", lineOf(readme, m[4]), name)
		}
	}
	if n == 0 {
		t.Fatal("found no repository path in the README: the extraction is broken")
	}
}

// TestReadmeLinksResolve: every in-page link (the table of contents,
// "see [Runbook: topics](#runbook-topics)") names a heading, with GitHub's
// anchors (lower case, punctuation dropped, spaces as hyphens).
func TestReadmeLinksResolve(t *testing.T) {
	readme := readReadme(t)
	_, prose := splitFences(readme)
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} (.+)$`).FindAllStringSubmatch(prose, -1) {
		a := githubAnchor(m[1])
		for i := 1; anchors[a]; i++ {
			a = fmt.Sprintf("%s-%d", githubAnchor(m[1]), i)
		}
		anchors[a] = true
	}
	links := regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatchIndex(prose, -1)
	if len(links) == 0 {
		t.Fatal("README has no in-page links: where did the table of contents go?")
	}
	for _, m := range links {
		if a := prose[m[2]:m[3]]; !anchors[a] {
			t.Errorf("README line %d links to #%s, which is no heading", lineOf(prose, m[0]), a)
		}
	}
}

func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// breakerNames are values of pushlog_breaker_state's breaker label that
// look like paths.
var breakerNames = map[string]bool{"ingest/kafka": true, "analytics/clickhouse": true}

// TestReadmeStartsWithTheTwoCommands: the README's first code block holds
// the run command and the test command, and the test command is the one CI
// runs (.ci/run).
func TestReadmeStartsWithTheTwoCommands(t *testing.T) {
	blocks, _ := splitFences(readReadme(t))
	if len(blocks) == 0 {
		t.Fatal("README has no code block")
	}
	first := blocks[0].text
	if !regexp.MustCompile(`(?m)^go run \./cmd/pushlog serve\s*$`).MatchString(first) {
		t.Errorf("README's first code block has no `go run ./cmd/pushlog serve` line:\n%s", first)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^exec (?:bash )?(?:\./)?(\S+)\s*$`).FindStringSubmatch(string(ci))
	if m == nil {
		t.Fatalf(".ci/run has no `exec SCRIPT` line:\n%s", ci)
	}
	if !regexp.MustCompile(`(?m)^(?:bash )?\./` + regexp.QuoteMeta(m[1]) + `\s*$`).MatchString(first) {
		t.Errorf("README's first code block does not run ./%s, which .ci/run runs:\n%s", m[1], first)
	}
}

// cliIndex is pushlog's command line as the kong model has it.
type cliIndex struct {
	cmds  map[string]map[string]bool // "serve", "analytics report", "" (root) → flags it accepts, parents' included
	all   map[string]bool            // every flag of every command
	envs  map[string]bool            // every variable any flag reads
	child map[string][]string        // command path → its subcommands
}

func newCLIIndex(p *kong.Kong) *cliIndex {
	idx := &cliIndex{cmds: map[string]map[string]bool{}, all: map[string]bool{}, envs: map[string]bool{}, child: map[string][]string{}}
	var walk func(n *kong.Node, path string)
	walk = func(n *kong.Node, path string) {
		flags := map[string]bool{"--help": true}
		for _, group := range n.AllFlags(false) {
			for _, fl := range group {
				for _, name := range flagSpellings(fl) {
					flags[name] = true
					idx.all[name] = true
				}
				for _, e := range fl.Envs {
					idx.envs[e] = true
				}
			}
		}
		idx.cmds[path] = flags
		for _, ch := range n.Children {
			if ch.Type != kong.CommandNode {
				continue
			}
			for _, name := range append([]string{ch.Name}, ch.Aliases...) {
				idx.child[path] = append(idx.child[path], name)
				walk(ch, strings.TrimSpace(path+" "+name))
			}
		}
	}
	walk(p.Model.Node, "")
	return idx
}

// flagSpellings are the ways a user can type a flag: its name, aliases and
// negation.
func flagSpellings(fl *kong.Flag) []string {
	out := []string{"--" + fl.Name}
	for _, a := range fl.Aliases {
		out = append(out, "--"+a)
	}
	if fl.Tag != nil && fl.Tag.Negatable != "" {
		if fl.Tag.Negatable == "_" {
			out = append(out, "--no-"+fl.Name)
		} else {
			out = append(out, "--"+fl.Tag.Negatable)
		}
	}
	return out
}

// subcommand resolves the longest command path at the start of args (which
// follow "pushlog"); rest is what follows it.
func (idx *cliIndex) subcommand(args []token) (path string, rest []token, ok bool) {
	for len(args) > 0 && !args[0].quoted {
		next := strings.TrimSpace(path + " " + args[0].text)
		if _, known := idx.cmds[next]; !known {
			break
		}
		path, args = next, args[1:]
	}
	return path, args, path != ""
}

type readmeChecker struct {
	idx     *cliIndex
	tools   map[string]map[string]bool // "pushattack", "pushload serve" → flags from --help
	t       *testing.T
	checked int
}

// programs whose flags the README may name besides pushlog's: each is ours
// and answers --help.
var ownTools = map[string]string{"pushattack": "../pushattack", "pushload": "../pushload"}

// checkLine checks one shell command line (or an inline code span).
func (ck *readmeChecker) checkLine(line string, at int, inline bool) {
	for _, cmd := range splitCommands(line) {
		toks := tokenize(cmd)
		prog, args := program(toks)
		if inline && len(toks) > 0 && !toks[0].quoted {
			// A span in prose may name a pushlog subcommand without the
			// program: `listen --server-key …`.
			if path, rest, ok := ck.idx.subcommand(toks); ok && hasFlag(rest) {
				ck.flagsOf(path, rest, at)
				continue
			}
		}
		switch {
		case prog == "pushlog":
			ck.pushlogCommand(args, at, cmd)
		case ownTools[prog] != "":
			ck.toolCommand(prog, args, at)
		case prog == "other:go" && len(args) > 0 && args[0].text == "test":
			ck.goTest(args[1:], at)
		case prog == "" && inline:
			// A span in prose like `--max-channels 50`: a lone flag.
			if len(toks) > 0 && strings.HasPrefix(toks[0].text, "--") && !toks[0].quoted {
				ck.loneFlag(toks[0].text, at)
			}
		}
	}
}

func hasFlag(toks []token) bool {
	for _, tk := range toks {
		if !tk.quoted && strings.HasPrefix(tk.text, "--") {
			return true
		}
	}
	return false
}

func (ck *readmeChecker) pushlogCommand(args []token, at int, cmd string) {
	ck.checked++
	path, rest, ok := ck.idx.subcommand(args)
	if !ok {
		if len(args) > 0 && !args[0].quoted && !strings.HasPrefix(args[0].text, "-") && !placeholder(args[0].text) {
			ck.t.Errorf("README line %d: `pushlog %s` is no pushlog subcommand (have %s): %q", at, args[0].text, strings.Join(ck.idx.child[""], ", "), cmd)
			return
		}
	}
	if len(rest) > 0 && !rest[0].quoted && len(ck.idx.child[path]) > 0 && !strings.HasPrefix(rest[0].text, "-") && !placeholder(rest[0].text) {
		ck.t.Errorf("README line %d: `pushlog %s %s`: %s has no subcommand %q (have %s)", at, path, rest[0].text, path, rest[0].text, strings.Join(ck.idx.child[path], ", "))
	}
	ck.flagsOf(path, rest, at)
}

func (ck *readmeChecker) flagsOf(path string, args []token, at int) {
	for _, f := range flagsIn(args) {
		ck.checked++
		if !ck.idx.cmds[path][f] {
			ck.t.Errorf("README line %d: `pushlog %s` has no flag %s", at, path, f)
		}
	}
}

func (ck *readmeChecker) loneFlag(f string, at int) {
	ck.checked++
	if ck.idx.all[f] {
		return
	}
	for tool := range ownTools {
		if ck.toolFlags(tool, nil)[f] {
			return
		}
	}
	ck.t.Errorf("README line %d: flag %s is no flag of any pushlog subcommand, pushattack or pushload", at, f)
}

func (ck *readmeChecker) toolCommand(tool string, args []token, at int) {
	var sub []string
	if len(args) > 0 && !args[0].quoted && !strings.HasPrefix(args[0].text, "-") {
		sub = []string{args[0].text}
		args = args[1:]
	}
	flags := ck.toolFlags(tool, sub)
	for _, f := range flagsIn(args) {
		ck.checked++
		if !flags[f] {
			ck.t.Errorf("README line %d: `%s` has no flag %s", at, strings.Join(append([]string{tool}, sub...), " "), f)
		}
	}
}

// goTest checks that a `go test ./pkg -run X -bench Y` the README gives
// (for a figure or a test) still names tests of that package: the first
// element of each pattern must match a Test/Benchmark function of the
// package's test files. Patterns that deliberately match nothing (x, ^$)
// and ./... are skipped.
func (ck *readmeChecker) goTest(args []token, at int) {
	var pkgs []string
	patterns := map[string]string{} // "Test" or "Benchmark" → pattern
	for i := 0; i < len(args); i++ {
		a := args[i].text
		switch {
		case strings.HasPrefix(a, "./") && !strings.HasSuffix(a, "..."):
			pkgs = append(pkgs, strings.TrimSuffix(a, "/"))
		case a == "-run" || a == "-bench":
			if i+1 < len(args) {
				patterns[map[string]string{"-run": "Test", "-bench": "Benchmark"}[a]] = args[i+1].text
				i++
			}
		case strings.HasPrefix(a, "-run=") || strings.HasPrefix(a, "-bench="):
			kind, value, _ := strings.Cut(a, "=")
			patterns[map[string]string{"-run": "Test", "-bench": "Benchmark"}[kind]] = value
		}
	}
	if len(pkgs) != 1 {
		return
	}
	for kind, pattern := range patterns {
		first, _, _ := strings.Cut(pattern, "/")
		if first == "x" || first == "^$" || first == "" || first == "." {
			continue
		}
		re, err := regexp.Compile(first)
		if err != nil {
			ck.t.Errorf("README line %d: go test pattern %q: %v", at, pattern, err)
			continue
		}
		ck.checked++
		if !ck.packageHasTest(pkgs[0], kind, re) {
			ck.t.Errorf("README line %d: no %s function of %s matches %q", at, kind, pkgs[0], pattern)
		}
	}
}

// packageHasTest: a func KindXxx( in the package's _test.go files matches re.
func (ck *readmeChecker) packageHasTest(pkg, kind string, re *regexp.Regexp) bool {
	files, err := filepath.Glob(filepath.Join("../..", pkg, "*_test.go"))
	if err != nil || len(files) == 0 {
		ck.t.Errorf("README names go test %s, which has no test files", pkg)
		return true
	}
	fn := regexp.MustCompile(`(?m)^func (` + kind + `[A-Za-z0-9_]*)\(`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			ck.t.Fatal(err)
		}
		for _, m := range fn.FindAllSubmatch(b, -1) {
			if re.Match(m[1]) {
				return true
			}
		}
	}
	return false
}

// toolFlags asks one of our other binaries for its flags (--help).
func (ck *readmeChecker) toolFlags(tool string, sub []string) map[string]bool {
	key := strings.Join(append([]string{tool}, sub...), " ")
	if flags, ok := ck.tools[key]; ok {
		return flags
	}
	args := append(append([]string{"run", ownTools[tool]}, sub...), "--help")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		ck.t.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`--(\[no-\])?([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags["--"+m[2]] = true
		if m[1] != "" {
			flags["--no-"+m[2]] = true
		}
	}
	ck.tools[key] = flags
	return flags
}

// placeholder: words standing for something (… , NS, <sub>, [--until …]).
func placeholder(s string) bool {
	return strings.ContainsAny(s, "…<>[]") || s == "..."
}

// flagsIn lists the flags among a command's arguments (--x=v as --x).
func flagsIn(args []token) []string {
	var out []string
	re := regexp.MustCompile(`^\[?(--[a-z0-9][a-z0-9-]*)`)
	for _, a := range args {
		if a.quoted {
			continue
		}
		if m := re.FindStringSubmatch(a.text); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// program finds the program a command runs, skipping VAR=value
// assignments and export/sudo; `go run ./cmd/X` runs X. Any other program
// is returned by its base name, and its flags are not ours to check.
func program(toks []token) (string, []token) {
	for len(toks) > 0 && !toks[0].quoted && (regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(toks[0].text) || toks[0].text == "sudo" || toks[0].text == "export" || toks[0].text == "$") {
		toks = toks[1:]
	}
	if len(toks) == 0 {
		return "", nil
	}
	name := toks[0].text
	if name == "go" && len(toks) >= 3 && toks[1].text == "run" {
		if m := regexp.MustCompile(`^\./cmd/([a-z0-9]+)/?$`).FindStringSubmatch(toks[2].text); m != nil {
			return m[1], toks[3:]
		}
	}
	// A path runs ours only as an installed or built binary (./pushlog,
	// /usr/local/bin/pushlog), not cmd/pushlog (a directory).
	if m := regexp.MustCompile(`^(?:\./|.*/bin/)([a-z]+)$`).FindStringSubmatch(name); m != nil {
		name = m[1]
	}
	switch name {
	case "pushlog", "pushattack", "pushload":
		return name, toks[1:]
	}
	if strings.HasPrefix(name, "--") || toks[0].quoted {
		return "", toks
	}
	return "other:" + name, toks[1:]
}

type token struct {
	text   string
	quoted bool
}

// tokenize splits a command like a shell would, enough for the README:
// quotes group words, and a quoted word is never a flag.
func tokenize(s string) []token {
	var out []token
	var cur strings.Builder
	quoted, in, quote := false, false, byte(0)
	flush := func() {
		if in {
			out = append(out, token{cur.String(), quoted})
		}
		cur.Reset()
		quoted, in = false, false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote, quoted, in = c, true, true
		case c == ' ' || c == '\t':
			flush()
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	flush()
	return out
}

// splitCommands cuts a line at shell separators and drops a trailing
// comment; `$(…)` and `(…)` open a new command too.
func splitCommands(line string) []string {
	if i := regexp.MustCompile(`(^|\s)#`).FindStringIndex(line); i != nil {
		line = line[:i[0]]
	}
	if i := strings.Index(line, "//"); i >= 0 && !strings.Contains(line[:i], ":") {
		line = line[:i]
	}
	parts := regexp.MustCompile(`\|\||&&|[|;&]|\$\(|\(|\)|\x60`).Split(line, -1)
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// logicalLines joins lines continued with a trailing backslash; line is
// where each starts (0-based within the block).
func logicalLines(block string) []span {
	var out []span
	cur, start := "", -1
	for i, l := range strings.Split(block, "\n") {
		if start < 0 {
			start = i
		}
		if t := strings.TrimRight(l, " "); strings.HasSuffix(t, `\`) {
			cur += strings.TrimSuffix(t, `\`) + " "
			continue
		}
		out = append(out, span{cur + l, start})
		cur, start = "", -1
	}
	if cur != "" {
		out = append(out, span{cur, start})
	}
	return out
}

type fenced struct {
	text string
	line int
}

// splitFences returns the fenced code blocks and the prose with each block
// blanked (newlines kept, so line numbers stay right).
func splitFences(readme string) ([]fenced, string) {
	var blocks []fenced
	var prose strings.Builder
	lines := strings.Split(readme, "\n")
	in, start := false, 0
	var cur []string
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			if in {
				blocks = append(blocks, fenced{strings.Join(cur, "\n"), start + 1})
				cur = nil
			} else {
				start = i + 1
			}
			in = !in
			prose.WriteString("\n")
			continue
		}
		if in {
			cur = append(cur, l)
			prose.WriteString("\n")
		} else {
			prose.WriteString(l + "\n")
		}
	}
	return blocks, prose.String()
}

type span struct {
	text string
	line int
}

var inlineRE = regexp.MustCompile("`([^`\n]+)`")

func inlineCode(prose string) []span {
	var out []span
	for _, m := range inlineRE.FindAllStringSubmatchIndex(prose, -1) {
		out = append(out, span{prose[m[2]:m[3]], lineOf(prose, m[0])})
	}
	return out
}

// stripInline blanks inline code spans (same length, so offsets hold).
func stripInline(prose string) string {
	return inlineRE.ReplaceAllStringFunc(prose, func(s string) string { return strings.Repeat(" ", len(s)) })
}

func lineOf(s string, off int) int { return strings.Count(s[:off], "\n") + 1 }

func uniq(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// usedElsewhere reports which names occur in a file of the repository
// other than the README and this test (a script or test using the
// variable). Caches, VCS data and vendored assets are not looked at.
func usedElsewhere(t *testing.T, names []string) map[string]bool {
	t.Helper()
	used := map[string]bool{}
	root := "../.."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".cache", "node_modules", "vendor", "testdata", "pushlog-data":
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "README.md" || rel == filepath.Join("cmd", "pushlog", "readme_test.go") {
			return nil
		}
		info, err := d.Info()
		if err != nil || !info.Mode().IsRegular() || info.Size() > 1<<20 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, n := range names {
			if !used[n] && bytes.Contains(b, []byte(n)) {
				used[n] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return used
}

// TestReadmeCommandExtraction: how README lines are read as commands (the
// program, pushlog's subcommand, the flags checked).
func TestReadmeCommandExtraction(t *testing.T) {
	idx := newCLIIndex(testParser(t))
	describe := func(line string) []string {
		var out []string
		for _, cmd := range splitCommands(line) {
			prog, args := program(tokenize(cmd))
			if prog == "pushlog" {
				path, rest, _ := idx.subcommand(args)
				prog = strings.TrimSpace("pushlog " + path)
				args = rest
			}
			out = append(out, strings.TrimSpace(prog+" "+strings.Join(flagsIn(args), " ")))
		}
		return out
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"go run ./cmd/pushlog serve --roles ingest", []string{"pushlog serve --roles"}},
		{"KAFKA_BROKERS=k1:9092 pushlog topics --create --partitions 12", []string{"pushlog topics --create --partitions"}},
		{"export A=1 B=2", []string{""}},
		{"curl --fail http://x | pushlog listen --url=ws://y/", []string{"other:curl --fail", "pushlog listen --url"}},
		{"go test ./integration -run TestSoak -v", []string{"other:go"}},
		{"pushlog repair --dry-run   # comment --not-checked", []string{"pushlog repair --dry-run"}},
		{"pushlog analytics rebuild --since 2026-05-01 [--until 2026-05-03]", []string{"pushlog analytics rebuild --since --until"}},
		{`go run ./cmd/pushlog send @/tmp/sub.json "hello --not-a-flag"`, []string{"pushlog send"}},
		{"go run ./cmd/pushattack --list", []string{"pushattack --list"}},
		{"/usr/local/bin/pushlog health -q http://x", []string{"pushlog health"}},
		{"cmd/pushlog ─┬─ ingest", []string{"other:cmd/pushlog"}},
		{"deploy/kafka/kafka-configs.sh … --add-config retention.ms=1", []string{"other:deploy/kafka/kafka-configs.sh --add-config"}},
	} {
		if got := describe(tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("%q read as %q, want %q", tc.line, got, tc.want)
		}
	}
}
