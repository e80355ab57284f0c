package main

import (
	"runtime/debug"
	"testing"
)

func TestBuildVersionFrom(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	tests := []struct {
		name       string
		ldflag     string
		info       *debug.BuildInfo
		ok         bool
		want       buildVersion
		line       string
		commitJSON string
	}{
		{"no build info", "dev", nil, false, buildVersion{Version: "dev"}, "pushlog dev", ""},
		{"devel module, no vcs", "dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true,
			buildVersion{Version: "dev"}, "pushlog dev", ""},
		{"vcs stamp", "dev", &debug.BuildInfo{
			Main:     debug.Module{Version: "v0.0.0-20261206054837-53d95367eb80+dirty"},
			Settings: vcs("vcs.revision", "53d95367eb80cfb5", "vcs.time", "2026-12-06T05:48:37Z", "vcs.modified", "true"),
		}, true,
			buildVersion{Version: "v0.0.0-20261206054837-53d95367eb80+dirty", Commit: "53d95367eb80cfb5", Time: "2026-12-06T05:48:37Z", Modified: true},
			"pushlog v0.0.0-20261206054837-53d95367eb80+dirty (commit 53d95367eb80cfb5, modified, 2026-12-06T05:48:37Z)", "53d95367eb80cfb5-modified"},
		{"ldflag wins over the module version", "v1.2.3", &debug.BuildInfo{
			Main:     debug.Module{Version: "v0.0.0-x"},
			Settings: vcs("vcs.revision", "abc", "vcs.modified", "false"),
		}, true, buildVersion{Version: "v1.2.3", Commit: "abc"}, "pushlog v1.2.3 (commit abc)", "abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := buildVersionFrom(tt.ldflag, tt.info, tt.ok)
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if got.String() != tt.line {
				t.Errorf("String() = %q, want %q", got.String(), tt.line)
			}
			if info := got.info(); info.Commit != tt.commitJSON || info.Version != tt.want.Version || info.Source != sourceURL {
				t.Errorf("info() = %+v", info)
			}
		})
	}
}
