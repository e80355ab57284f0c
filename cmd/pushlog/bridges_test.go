package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBridgeFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "apps.json")
	if err := os.WriteFile(file, []byte(`{"fenix": {"credentials": "/k.json"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		flags   bridgeFlags
		fcm     int
		apns    int
		keys    int
		wantErr bool
	}{
		{"inline", bridgeFlags{FCMApps: `{"a": {"credentials": "/x"}}`, APNsApps: `{"ios": {"key": "/k.p8", "key_id": "K", "team_id": "T", "topic": "org.x"}}`, BridgeAuthKeys: "0123456789abcdef0,fedcba9876543210f"}, 1, 1, 2, false},
		{"file and list", bridgeFlags{FCMApps: "@" + file, BridgeAuthKeys: `["0123456789abcdef0"]`}, 1, 0, 1, false},
		{"unknown field", bridgeFlags{FCMApps: `{"a": {"credential": "/x"}}`, BridgeAuthKeys: "0123456789abcdef0"}, 0, 0, 0, true},
		{"slash in app id", bridgeFlags{FCMApps: `{"a/b": {}}`, BridgeAuthKeys: "0123456789abcdef0"}, 0, 0, 0, true},
		{"missing file", bridgeFlags{FCMApps: "@" + filepath.Join(dir, "nope")}, 0, 0, 0, true},
		{"no auth keys", bridgeFlags{FCMApps: `{"a": {}}`}, 1, 0, 0, true},
		{"short auth key", bridgeFlags{FCMApps: `{"a": {}}`, BridgeAuthKeys: "short"}, 1, 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, a, err := tc.flags.apps()
			if err == nil {
				var keys [][]byte
				keys, err = tc.flags.authKeys()
				if err == nil && len(keys) != tc.keys {
					t.Fatalf("%d keys, want %d", len(keys), tc.keys)
				}
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && (len(f) != tc.fcm || len(a) != tc.apns) {
				t.Fatalf("apps %v %v", f, a)
			}
		})
	}
	if (bridgeFlags{}).enabled() {
		t.Fatal("bridges on without apps")
	}
}
