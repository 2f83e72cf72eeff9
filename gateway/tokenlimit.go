package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
)

// Token budgets (issue 15): a plan may limit the tokens (input + output)
// its keys spend on generation per UTC minute and per UTC month, beside its
// requests. The counts live in Redis under internal/limitkeys' names, shared
// by every gateway:
//
//   - admission (AllowTokens): a generation request is admitted while the
//     key is under both budgets, read from Redis in one round trip (only for
//     keys whose plan has a token budget; generation requests last hundreds
//     of milliseconds, so the round trip is not worth a local settlement as
//     the request limits have);
//   - charge (ChargeTokens): once the answer's usage is known (a whole
//     answer's usage object, a stream's last event), its tokens are added
//     to both counts. A request admitted under budget may thus take the key
//     over it: the next one is refused, as a prepaid meter does.
//
// A month's count Redis lost is seeded again from the month's tokens in the
// usage table, as the request quota is. Redis failing fails open, as the
// request limits do.

// tokenDecision is the pure part: whether a key that spent minute tokens
// this minute and month tokens this month may start another request at
// now, under budgets perMinute and perMonth (0: unlimited).
func tokenDecision(now time.Time, minute, month, perMinute, perMonth int64) Verdict {
	v := Verdict{Allowed: true}
	utc := now.UTC()
	switch {
	case perMonth > 0 && month >= perMonth:
		next := time.Date(utc.Year(), utc.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		v.Allowed, v.Reason, v.RetryAfter = false, "token_quota_exceeded", next.Sub(utc)
	case perMinute > 0 && minute >= perMinute:
		v.Allowed, v.Reason, v.RetryAfter = false, "token_rate_limited", utc.Truncate(time.Minute).Add(time.Minute).Sub(utc)
	}
	v.Reset = v.RetryAfter
	return v
}

// hasTokenBudget says k's plan limits tokens.
func hasTokenBudget(k *Key) bool { return k.TokensPerMinute > 0 || k.TokensPerMonth > 0 }

// AllowTokens says whether k is under its token budgets now.
func (l *Limiter) AllowTokens(ctx context.Context, k *Key) Verdict {
	if l == nil || !hasTokenBudget(k) {
		return Verdict{Allowed: true}
	}
	if l.redisDown.active() {
		return Verdict{Allowed: true, FailOpen: true, Err: l.redisDown.cause()}
	}
	now := l.now()
	month := limitkeys.Month(now)
	minKey := limitkeys.TokenMinuteKey(l.prefix, k.ID, limitkeys.Minute(now))
	monKey := limitkeys.TokenMonthKey(l.prefix, k.ID, month)
	var minCmd, monCmd *redis.StringCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		minCmd = p.Get(ctx, minKey)
		monCmd = p.Get(ctx, monKey)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		l.redisDown.trip(err)
		return Verdict{Allowed: true, FailOpen: true, Err: fmt.Errorf("read token counts of key %d: %w", k.ID, err)}
	}
	minute, _ := minCmd.Int64() // (missing: none spent this minute)
	used, err := monCmd.Int64()
	if errors.Is(err, redis.Nil) && k.TokensPerMonth > 0 && !l.pgDown.active() {
		// lost, or the key's first tokens this month
		used, err = l.seedCount(ctx, monKey, k.ID, month, sumTokens, 0, 0)
		if err != nil {
			return Verdict{Allowed: true, FailOpen: true, Err: err}
		}
	}
	return tokenDecision(now, minute, used, k.TokensPerMinute, k.TokensPerMonth)
}

// tokenChargeTimeout bounds a charge, which runs after the answer (the
// request's context may have ended with it).
const tokenChargeTimeout = 500 * time.Millisecond

// ChargeTokens adds n tokens to k's counts; it runs once the answer's usage
// is known. A failure loses the charge (logged by the caller), as a request
// admitted while Redis fails open is not counted either.
func (l *Limiter) ChargeTokens(k *Key, n int64) error {
	if l == nil || n <= 0 || !hasTokenBudget(k) || l.redisDown.active() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), tokenChargeTimeout)
	defer cancel()
	now := l.now()
	month := limitkeys.Month(now)
	monKey := limitkeys.TokenMonthKey(l.prefix, k.ID, month)
	var monCmd *redis.Cmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if k.TokensPerMinute > 0 {
			minKey := limitkeys.TokenMinuteKey(l.prefix, k.ID, limitkeys.Minute(now))
			p.IncrBy(ctx, minKey, n)
			p.Expire(ctx, minKey, limitkeys.TokenMinuteTTL)
		}
		if k.TokensPerMonth > 0 {
			monCmd = quotaIncr.Eval(ctx, p, []string{monKey}, n, int64(limitkeys.TokenMonthTTL/time.Second))
		}
		return nil
	})
	if err != nil {
		l.redisDown.trip(err)
		return fmt.Errorf("charge %d tokens to key %d: %w", n, k.ID, err)
	}
	if monCmd != nil {
		if v, err := monCmd.Int64(); err == nil && v < 0 { // lost: seed it again, this charge on top
			if _, err := l.seedCount(ctx, monKey, k.ID, month, sumTokens, 0, n); err != nil {
				return fmt.Errorf("charge %d tokens to key %d: %w", n, k.ID, err)
			}
		}
	}
	return nil
}
