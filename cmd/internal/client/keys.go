// Package client implements pushlog's small client tools: `pushlog keys`
// (make a VAPID key pair), `pushlog listen` (a user agent speaking the
// Firefox WebSocket push protocol, decrypting what it receives) and
// `pushlog send` (an application server posting one encrypted, VAPID-signed
// message). cmd/pushlog wires them to flags.
package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pushlog/pushlog/ingest/webpush"
)

// KeysOptions configure Keys.
type KeysOptions struct {
	Out  io.Writer // where the keys are printed; nil = os.Stdout
	File string    // optional: also write the pair to this JSON key file (mode 0600)
}

// keyFile is the JSON key file Keys writes and send's "@file" reads.
type keyFile struct {
	PublicKey  string `json:"publicKey"`
	PrivateKey string `json:"privateKey"`
}

// Keys generates a VAPID key pair and prints it: the public key (base64url
// of the 65-byte uncompressed point, which is also the browser's
// applicationServerKey and listen's server key) and the private key
// (base64url of the raw 32-byte scalar, what send takes).
func Keys(opts KeysOptions) error {
	out := opts.Out
	if out == nil {
		out = os.Stdout
	}
	k, err := webpush.GenerateVAPIDKey()
	if err != nil {
		return err
	}
	if opts.File != "" {
		b, err := json.MarshalIndent(keyFile{PublicKey: k.PublicKeyString(), PrivateKey: k.PrivateKeyString()}, "", "  ")
		if err != nil {
			return fmt.Errorf("encode key file: %w", err)
		}
		if err := writeFileAtomic(opts.File, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("write key file: %w", err)
		}
	}
	_, err = fmt.Fprintf(out, "VAPID public key:  %s\nVAPID private key: %s\n\n"+
		"applicationServerKey: %q\n"+
		"  (in a page: registration.pushManager.subscribe({userVisibleOnly: true, applicationServerKey: %q}))\n",
		k.PublicKeyString(), k.PrivateKeyString(), k.PublicKeyString(), k.PublicKeyString())
	if err == nil && opts.File != "" {
		_, err = fmt.Fprintf(out, "key file: %s\n", opts.File)
	}
	return err
}

// readArg returns s, or the contents of the file s names as "@path".
func readArg(s string) ([]byte, error) {
	path, ok := strings.CutPrefix(s, "@")
	if !ok {
		return []byte(s), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// loadVAPIDKey reads a private key given inline or as "@file" (a key file
// from Keys, a bare base64url key, or PEM); empty means a fresh pair.
func loadVAPIDKey(spec string) (key *webpush.VAPIDKey, generated bool, err error) {
	if spec == "" {
		k, err := webpush.GenerateVAPIDKey()
		return k, true, err
	}
	b, err := readArg(spec)
	if err != nil {
		return nil, false, fmt.Errorf("vapid key: %w", err)
	}
	text := strings.TrimSpace(string(b))
	if !strings.HasPrefix(text, "{") {
		k, err := webpush.ParseVAPIDPrivateKey(text)
		return k, false, err
	}
	var kf keyFile
	if err := json.Unmarshal([]byte(text), &kf); err != nil {
		return nil, false, fmt.Errorf("vapid key file: %w", err)
	}
	if kf.PrivateKey == "" {
		return nil, false, errors.New("vapid key file: no privateKey")
	}
	k, err := webpush.ParseVAPIDPrivateKey(kf.PrivateKey)
	if err != nil {
		return nil, false, err
	}
	if kf.PublicKey != "" && strings.TrimRight(kf.PublicKey, "=") != k.PublicKeyString() {
		return nil, false, errors.New("vapid key file: publicKey does not belong to privateKey")
	}
	return k, false, nil
}

// writeFileAtomic writes through a temporary file and a rename, so a reader
// (a test polling for the subscription, a restarted listen) never sees a
// half-written file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
