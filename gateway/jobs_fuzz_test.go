package gateway

import (
	"context"
	"strings"
	"testing"
)

// countSink drains texts as the upload would store them.
type countSink struct{ n int }

func (c *countSink) Texts(_ context.Context, next func() (string, bool, error)) (int, error) {
	for {
		_, ok, err := next()
		if err != nil || !ok {
			return c.n, err
		}
		c.n++
	}
}

func (c *countSink) Count() int { return c.n }

// FuzzJobUpload: the streaming parsers of a job upload (JSON and JSONL)
// never panic and never take more texts than allowed, whatever the body.
func FuzzJobUpload(f *testing.F) {
	f.Add(`{"model":"m","task":"sentiment","texts":["a","b"],"webhook":"https://x/"}`)
	f.Add(`{"texts":["a"],"parameters":{"top_k":1},"model":"m","task":"sentiment"}`)
	f.Add("\"a\"\n{\"text\":\"b\"}\n\n")
	f.Add(`{"texts":[1,`)
	g := &Gateway{jobs: &gatewayJobs{cfg: JobsConfig{JobMaxTextBytes: 64, JobMaxBytes: 4096}}}
	f.Fuzz(func(t *testing.T, body string) {
		ctx := context.Background()
		var ju jobUpload
		s := &countSink{}
		_ = g.readJSONJob(ctx, s, &capReader{r: strings.NewReader(body), max: 4096}, &ju, func() bool { return true })
		if s.n > len(body) {
			t.Fatalf("%d texts from %d bytes", s.n, len(body))
		}
		s = &countSink{}
		_ = g.readJSONLTexts(ctx, s, &capReader{r: strings.NewReader(body), max: 4096})
		if s.n > len(body) {
			t.Fatalf("%d texts from %d bytes", s.n, len(body))
		}
	})
}
