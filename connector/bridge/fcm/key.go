package fcm

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
)

// parseKey checks a PEM RSA private key (PKCS#8 as Google issues, or PKCS#1).
func parseKey(p []byte) ([]byte, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); ok {
			return b.Bytes, nil
		}
		return nil, errors.New("not an RSA key")
	}
	if _, err := x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
		return nil, err
	}
	return b.Bytes, nil
}
