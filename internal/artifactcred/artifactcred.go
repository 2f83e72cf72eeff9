package artifactcred

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Period is the credential grid: a credential minted at any time is valid
// for between one and two Periods, and changes once a Period.
const Period = 7 * 24 * time.Hour

const version = "v1"

// Errors of Verify; every refusal wraps ErrInvalid.
var (
	ErrInvalid = errors.New("invalid artifact credential")
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalid)
	ErrDigest  = fmt.Errorf("%w: for another digest", ErrInvalid)
	ErrMAC     = fmt.Errorf("%w: bad signature", ErrInvalid)
)

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Cred is a parsed credential.
type Cred struct {
	Digest  string
	Expires time.Time
	MAC     []byte
}

// Key derives the credential key from the internal token, so the key is
// never the token itself (which the apiserver also compares in the clear).
// An empty secret gives no key: Mint returns "" and Verify refuses all.
func Key(secret string) []byte { return deriveKey(secret, "nlpswarm artifact credential v1") }

// deriveKey is the key of one kind of credential (label) under secret: each
// kind has its own key, so a credential of one kind is never valid as
// another, even from the same secret. nil for an empty secret.
func deriveKey(secret, label string) []byte {
	if secret == "" {
		return nil
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(label))
	return m.Sum(nil)
}

// sign is HMAC-SHA256(key, the fields joined by "|"), the MAC of every
// credential of the package.
func sign(key []byte, fields ...string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strings.Join(fields, "|")))
	return m.Sum(nil)
}

func mac(key []byte, digest string, exp int64) []byte {
	return sign(key, version, digest, strconv.FormatInt(exp, 10))
}

// Expiry is the expiry a credential for digest minted at now gets: the end
// of now's Period-long window on a grid offset by the digest, plus one
// Period. Every time within one window gives the same expiry.
func Expiry(digest string, now time.Time) time.Time {
	p := int64(Period / time.Second)
	h := fnv.New64a()
	h.Write([]byte(digest))
	off := int64(h.Sum64() % uint64(p))
	t := now.Unix() - off
	start := t - ((t%p)+p)%p // floor, also before 1970
	return time.Unix(start+off+2*p, 0).UTC()
}

// Mint is the credential for digest, valid until expires; "" without a key.
func Mint(key []byte, digest string, expires time.Time) string {
	if len(key) == 0 {
		return ""
	}
	exp := expires.Unix()
	return version + "." + digest + "." + strconv.FormatInt(exp, 10) + "." + hex.EncodeToString(mac(key, digest, exp))
}

// Parse reads a credential's parts without checking its MAC.
func Parse(s string) (Cred, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != version {
		return Cred{}, fmt.Errorf("%w: not v1.<digest>.<expiry>.<mac>", ErrInvalid)
	}
	if !digestRE.MatchString(parts[1]) {
		return Cred{}, fmt.Errorf("%w: digest is not sha256:<64 hex>", ErrInvalid)
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || exp <= 0 || parts[2] != strconv.FormatInt(exp, 10) {
		return Cred{}, fmt.Errorf("%w: expiry is not a positive unix time", ErrInvalid)
	}
	// one spelling per credential, as Mint writes it: lower-case hex only
	// (hex.DecodeString also takes upper case; found by FuzzParse)
	m, err := hex.DecodeString(parts[3])
	if err != nil || len(m) != sha256.Size || hex.EncodeToString(m) != parts[3] {
		return Cred{}, fmt.Errorf("%w: mac is not 64 lower-case hex digits", ErrInvalid)
	}
	return Cred{Digest: parts[1], Expires: time.Unix(exp, 0).UTC(), MAC: m}, nil
}

// LooksLike reports whether s has a credential's prefix (so a caller can
// tell a credential from another kind of bearer token).
func LooksLike(s string) bool { return strings.HasPrefix(s, version+".") }

// Verify accepts s only if it is a credential for exactly digest, signed
// with key, and not expired at now.
func Verify(key []byte, s, digest string, now time.Time) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: no key configured", ErrInvalid)
	}
	c, err := Parse(s)
	if err != nil {
		return err
	}
	if !hmac.Equal(c.MAC, mac(key, c.Digest, c.Expires.Unix())) {
		return ErrMAC
	}
	if c.Digest != digest {
		return ErrDigest
	}
	if !now.Before(c.Expires) {
		return ErrExpired
	}
	return nil
}
