package customerapi

import (
	"errors"
	"testing"
	"time"
)

func TestWebhookSignature(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"type":"job.succeeded"}`)
	h := SignWebhook("whsec_x", now, body)
	if err := VerifyWebhook("whsec_x", h, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("verify: %v", err)
	}
	for name, c := range map[string]struct {
		secret, header string
		body           []byte
		now            time.Time
		want           error
	}{
		"other secret":  {"whsec_y", h, body, now, ErrBadSignature},
		"body changed":  {"whsec_x", h, []byte(`{"type":"job.cancelled"}`), now, ErrBadSignature},
		"too old":       {"whsec_x", h, body, now.Add(10 * time.Minute), ErrStaleWebhook},
		"no signature":  {"whsec_x", "t=1800000000", body, now, ErrBadSignature},
		"garbage":       {"whsec_x", "v1=zz,t=x", body, now, ErrBadSignature},
		"time replaced": {"whsec_x", "t=1800000100," + h[len("t=1800000000,"):], body, now, ErrBadSignature},
	} {
		if err := VerifyWebhook(c.secret, c.header, c.body, c.now, 5*time.Minute); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func FuzzVerifyWebhook(f *testing.F) {
	f.Add("t=1800000000,v1=00", []byte("{}"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		_ = VerifyWebhook("whsec_x", header, body, time.Unix(1_800_000_000, 0), time.Minute)
	})
}
