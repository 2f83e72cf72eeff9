package artifactcred

import (
	"strings"
	"testing"
)

func TestCall(t *testing.T) {
	secret := strings.Repeat("s", MinCallSecret)
	key, err := CallKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := CallKey(strings.Repeat("t", MinCallSecret))
	a := Call(key, "sentiment")
	if !strings.HasPrefix(a, "call.v1.") || len(a) != len("call.v1.")+64 {
		t.Fatalf("Call = %q, want call.v1.<64 hex>", a)
	}
	for _, tc := range []struct {
		name string
		got  string
		same bool
	}{
		{"derived again", Call(key, "sentiment"), true},
		{"another model", Call(key, "ner"), false},
		{"a model named like a prefix", Call(key, "sentimen"), false},
		{"another secret", Call(other, "sentiment"), false},
		{"the artifact key of the same secret", Call(Key(secret), "sentiment"), false},
	} {
		if (tc.got == a) != tc.same {
			t.Errorf("%s: %q vs %q, same %v", tc.name, tc.got, a, tc.same)
		}
	}
	if string(key) == string(Key(secret)) {
		t.Error("the call key is the artifact key of the same secret")
	}
	for _, tc := range []struct {
		secret  string
		wantKey bool
		wantErr bool
	}{
		{"", false, false},
		{"short", false, true},
		{strings.Repeat("x", MinCallSecret-1), false, true},
		{strings.Repeat("x", MinCallSecret), true, false},
	} {
		k, err := CallKey(tc.secret)
		if (err != nil) != tc.wantErr || (len(k) > 0) != tc.wantKey {
			t.Errorf("CallKey(%d bytes) = %d-byte key, %v", len(tc.secret), len(k), err)
		}
	}
	if Call(nil, "sentiment") != "" {
		t.Error("Call without a key gave a credential")
	}
}
