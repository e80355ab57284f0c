package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/pushlog/pushlog/ingest"
)

// version and commit are set at build time with -ldflags "-X
// main.version=… -X main.commit=…" (the Docker build, whose context has no
// .git); when they are not, the module version and VCS stamp of the build
// info are used.
var (
	version = "dev"
	commit  = ""
)

// sourceURL is the repository /__version__ names.
const sourceURL = "https://github.com/pushlog/pushlog"

// buildVersion is what a binary knows about its own build.
type buildVersion struct {
	Version  string // -X main.version, else the module version, else "dev"
	Commit   string // vcs.revision ("" when built without VCS information)
	Time     string // vcs.time (RFC 3339)
	Modified bool   // vcs.modified: the work tree had uncommitted changes
}

// readBuildVersion reads the version from the linker flag and
// runtime/debug.ReadBuildInfo (go build stamps vcs.* from git).
func readBuildVersion() buildVersion {
	info, ok := debug.ReadBuildInfo()
	v := buildVersionFrom(version, info, ok)
	if v.Commit == "" {
		v.Commit = commit
	}
	return v
}

func buildVersionFrom(ldflag string, info *debug.BuildInfo, ok bool) buildVersion {
	v := buildVersion{Version: ldflag}
	if !ok || info == nil {
		return v
	}
	if v.Version == "" || v.Version == "dev" {
		if mv := info.Main.Version; mv != "" && mv != "(devel)" {
			v.Version = mv
		}
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	if v.Version == "" {
		v.Version = "dev"
	}
	return v
}

// String is the one line `pushlog --version` prints.
func (v buildVersion) String() string {
	var b strings.Builder
	b.WriteString("pushlog " + v.Version)
	if v.Commit != "" {
		fmt.Fprintf(&b, " (commit %s", v.Commit)
		if v.Modified {
			b.WriteString(", modified")
		}
		if v.Time != "" {
			b.WriteString(", " + v.Time)
		}
		b.WriteString(")")
	}
	return b.String()
}

// commit is the revision with a "-modified" suffix for a dirty tree.
func (v buildVersion) commit() string {
	if v.Commit != "" && v.Modified {
		return v.Commit + "-modified"
	}
	return v.Commit
}

// info is the body of /__version__ (Dockerflow: source, version, commit,
// build).
func (v buildVersion) info() ingest.VersionInfo {
	return ingest.VersionInfo{Source: sourceURL, Version: v.Version, Commit: v.commit(), Build: v.Time}
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println(readBuildVersion())
	return nil
}
