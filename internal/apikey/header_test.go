package apikey

import "testing"

func TestFromAuthorization(t *testing.T) {
	for h, want := range map[string]string{
		"Token abc": "abc", "Bearer abc": "abc", "bearer abc": "abc", "TOKEN  abc ": "abc",
		"": "", "abc": "", "Basic YWxhZGRpbjpvcGVu": "", "Token": "", "Token ": "", "Tokenabc": "",
	} {
		if got := FromAuthorization(h); got != want {
			t.Errorf("FromAuthorization(%q) = %q, want %q", h, got, want)
		}
	}
}

func BenchmarkFromAuthorization(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = FromAuthorization("Token nlp_abcdefgh_abcdefghijklmnopqrstuvwxyz234567")
	}
}
