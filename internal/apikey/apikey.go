// Package apikey generates and parses customer API keys.
//
// A key reads nlp_<prefix>_<secret>: prefix is 8 lowercase base32 characters
// that identify the key in listings and logs (it is stored in clear), secret
// is 32 base32 characters (160 bits from crypto/rand). Only the SHA-256 of the
// whole key is stored; Hash gives it.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

const (
	// Scheme starts every key.
	Scheme = "nlp_"
	// PrefixLen is the length of the visible prefix.
	PrefixLen = 8
	// SecretLen is the length of the secret part.
	SecretLen = 32
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Generate makes a new key and returns it with its prefix and hash. The key
// is shown once to its owner and never stored.
func Generate() (key, prefix string, hash []byte, err error) {
	b := make([]byte, 25) // 5 bytes -> 8 chars of prefix, 20 bytes -> 32 chars of secret
	if _, err := rand.Read(b); err != nil {
		return "", "", nil, err
	}
	prefix = enc.EncodeToString(b[:5])
	secret := enc.EncodeToString(b[5:])
	key = Scheme + prefix + "_" + secret
	return key, prefix, Hash(key), nil
}

// Hash is the SHA-256 of the whole key, as stored in api_keys.hash.
func Hash(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// Prefix returns the visible prefix of a well-formed key; ok is false when
// key does not have the nlp_<prefix>_<secret> shape.
func Prefix(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, Scheme)
	if !ok || len(rest) != PrefixLen+1+SecretLen || rest[PrefixLen] != '_' {
		return "", false
	}
	if !valid(rest[:PrefixLen]) || !valid(rest[PrefixLen+1:]) {
		return "", false
	}
	return rest[:PrefixLen], true
}

// Redact gives a form of key safe for logs: its prefix only.
func Redact(key string) string {
	if p, ok := Prefix(key); ok {
		return Scheme + p + "_…"
	}
	return "(malformed key)"
}

func valid(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}
