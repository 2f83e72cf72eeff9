package apikey

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
)

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		key, prefix, hash, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, "nlp_"+prefix+"_") || len(prefix) != PrefixLen {
			t.Fatalf("key %q prefix %q", key, prefix)
		}
		p, ok := Prefix(key)
		if !ok || p != prefix {
			t.Fatalf("Prefix(%q) = %q %v", key, p, ok)
		}
		want := sha256.Sum256([]byte(key))
		if !bytes.Equal(hash, want[:]) || !bytes.Equal(Hash(key), hash) {
			t.Fatal("hash is not sha256 of the whole key")
		}
		if seen[key] || seen[prefix] {
			t.Fatal("duplicate key or prefix")
		}
		seen[key], seen[prefix] = true, true
		if strings.Contains(Redact(key), key[len(key)-10:]) {
			t.Fatal("Redact leaks the secret")
		}
	}
}

func TestPrefixRejects(t *testing.T) {
	good, _, _, _ := Generate()
	for _, k := range []string{
		"", "nlp_", "abc", "nlp_abcdefgh", "nlp_abcdefgh_", "xyz_abcdefgh_" + strings.Repeat("a", 32),
		"nlp_abcdefg_" + strings.Repeat("a", 33), "nlp_ABCDEFGH_" + strings.Repeat("a", 32),
		"nlp_abcdefgh-" + strings.Repeat("a", 32), "nlp_abcdefgh_" + strings.Repeat("a", 31) + "!",
		good + "x", good[:len(good)-1], " " + good,
	} {
		if p, ok := Prefix(k); ok {
			t.Errorf("Prefix(%q) accepted: %q", k, p)
		}
	}
	if p, ok := Prefix("nlp_abcdefgh_" + strings.Repeat("a", 32)); !ok || p != "abcdefgh" {
		t.Fatal("well-formed key rejected")
	}
}
