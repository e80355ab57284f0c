package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// HasEvents reports whether the broker directory dir holds any record
// batch: then endpoints and message ids sealed with the data directory's
// key exist somewhere, and a new key would orphan all of them.
func HasEvents(dir string) (bool, error) {
	parts := filepath.Join(dir, "partitions")
	pdirs, err := os.ReadDir(parts)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", parts, err)
	}
	for _, d := range pdirs {
		if !d.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(parts, d.Name()))
		if err != nil {
			return false, fmt.Errorf("read %s: %w", filepath.Join(parts, d.Name()), err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f.Name(), ".dat") {
				continue
			}
			if fi, err := f.Info(); err == nil && fi.Size() > 0 {
				return true, nil
			}
		}
	}
	return false, nil
}

// MissingKeysError explains how to go on when the key file is gone but
// the log it sealed is not.
func MissingKeysError(keyFile, dataDir string) error {
	return fmt.Errorf("%s is missing but %s holds events sealed with it: a new key would make every existing "+
		"endpoint and message id answer 404. Restore the file from a backup, or pass the keys with --crypto-keys "+
		"(PUSHLOG_CRYPTO_KEYS). To start over deliberately, either pass --new-keys (keeps the log; existing "+
		"subscriptions stop working) or delete %s (drops every subscription and message)",
		keyFile, filepath.Join(dataDir, "kafka"), filepath.Join(dataDir, "kafka"))
}
