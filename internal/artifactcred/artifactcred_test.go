package artifactcred

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	dA = "sha256:" + strings.Repeat("a", 64)
	dB = "sha256:" + strings.Repeat("b", 64)
)

func TestVerify(t *testing.T) {
	key, other := Key("internal-token"), Key("another-token")
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	good := Mint(key, dA, now.Add(time.Hour))
	last := good[len(good)-1:]
	flip := map[string]string{"0": "1"}[last]
	if flip == "" {
		flip = "0"
	}
	tampered := good[:len(good)-1] + flip
	swapped := strings.Replace(good, dA, dB, 1)
	later := strings.Replace(good, "."+itoa(now.Add(time.Hour).Unix())+".", "."+itoa(now.Add(1000*time.Hour).Unix())+".", 1)
	for _, tc := range []struct {
		name, cred, digest string
		key                []byte
		now                time.Time
		want               error
	}{
		{"valid", good, dA, key, now, nil},
		{"another digest's credential", good, dB, key, now, ErrDigest},
		{"digest rewritten", swapped, dB, key, now, ErrMAC},
		{"expiry pushed back", later, dA, key, now, ErrMAC},
		{"expired", good, dA, key, now.Add(time.Hour), ErrExpired},
		{"tampered mac", tampered, dA, key, now, ErrMAC},
		{"another key", good, dA, other, now, ErrMAC},
		{"no key", good, dA, nil, now, ErrInvalid},
		{"shared token", "internal-token", dA, key, now, ErrInvalid},
		{"empty", "", dA, key, now, ErrInvalid},
		{"mac cut short", good[:len(good)-2], dA, key, now, ErrInvalid},
		{"expiry with a sign", strings.Replace(good, "."+itoa(now.Add(time.Hour).Unix()), ".+"+itoa(now.Add(time.Hour).Unix()), 1), dA, key, now, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.key, tc.cred, tc.digest, tc.now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	if Mint(nil, dA, now) != "" {
		t.Error("Mint without a key gave a credential")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestExpiry(t *testing.T) {
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, d := range []string{dA, dB} {
		prev := Expiry(d, base)
		changes := 0
		for h := 1; h <= 24*7*4; h++ { // four weeks, hourly reconciles
			now := base.Add(time.Duration(h) * time.Hour)
			e := Expiry(d, now)
			if left := e.Sub(now); left < Period || left > 2*Period {
				t.Fatalf("%s at %s: expiry %s leaves %s, want between one and two Periods", d, now, e, left)
			}
			if !e.Equal(prev) {
				changes++
				prev = e
			}
		}
		if changes < 3 || changes > 4 {
			t.Errorf("%s: expiry changed %d times in four weeks, want once a Period", d, changes)
		}
	}
	if Expiry(dA, base).Equal(Expiry(dB, base)) {
		t.Log("two digests share a grid (possible, unlikely)")
	}
}

func FuzzParse(f *testing.F) {
	key := Key("k")
	f.Add(Mint(key, dA, time.Unix(1e9, 0)))
	f.Add("v1." + dA + ".-1.00")
	f.Add("v1...")
	f.Add("internal-token")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// what parses re-mints to itself when the MAC is the right one
		if got := Mint(key, c.Digest, c.Expires); Verify(key, s, c.Digest, time.Unix(0, 0)) == nil && got != s {
			t.Fatalf("verified %q but it re-mints as %q", s, got)
		}
		if !digestRE.MatchString(c.Digest) || c.Expires.Unix() <= 0 || len(c.MAC) != 32 {
			t.Fatalf("Parse(%q) = %+v", s, c)
		}
	})
}
