package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// TestReadmeConfigurationTable keeps the README's settings table true: every
// flag and variable it names must be one serve accepts, and every serve
// flag must be in the table (the README is what operators read).
func TestReadmeConfigurationTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var c cli
	parser, err := kong.New(&c, kong.Name("pushlog"))
	if err != nil {
		t.Fatal(err)
	}
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
	section := string(readme)
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
		if f == "--help" || strings.HasPrefix(f, "--log-") && named["--log-format"] {
			continue
		}
		if !named[f] {
			t.Errorf("serve flag %s is missing from the README's configuration table", f)
		}
	}
}
