package models

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestTruncateChars(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{{"hello", 10, "hello"}, {"hello", 5, "hello"}, {"hello", 3, "hel"}, {"héllo", 2, "hé"}, {"日本語テキスト", 3, "日本語"}, {"abc", 0, "abc"}, {"", 4, ""}} {
		if got := truncateChars(c.s, c.n); got != c.want {
			t.Errorf("truncateChars(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
	in := []string{"short", strings.Repeat("x", 100)}
	got := truncateTexts(in, 2)
	if got[0] != "short" || len(got[1]) != 2*charsPerToken || len(in[1]) != 100 {
		t.Errorf("truncateTexts: %q (input %d bytes after)", got, len(in[1]))
	}
}

// Cutting by characters changes no output: a 16 KB text answers as the same
// text cut to the model's positions, and the entities of a long text keep
// their words and offsets.
func TestTruncateKeepsOutputs(t *testing.T) {
	ctx := context.Background()
	long := strings.Repeat("what a wonderful concert and a great evening in Paris with Alice. ", 250) // ~16 KB
	for _, c := range []struct{ fixture, task string }{{"sentiment", TextClassification}, {"ner", TokenClassification}, {"embeddings", FeatureExtraction}} {
		m, err := LoadWith(fixture(t, c.fixture), c.fixture, c.task, EngineConfig{Backend: BackendGo})
		if err != nil {
			t.Fatal(err)
		}
		var p Params
		if err := p.Check(c.task); err != nil {
			t.Fatal(err)
		}
		cut, err := m.Predict(ctx, []string{long}, p)
		if err != nil {
			t.Fatal(err)
		}
		// the uncut text, straight to the pipeline
		whole, err := m.predictBatch([]string{long}, p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cut, whole) {
			t.Errorf("%s: cut %v\nwhole %v", c.fixture, cut, whole)
		}
		m.Close()
	}
}

// BenchmarkQueryOfDeath: 64 texts of 16 KB against 64 ordinary texts, in
// one process; ratio is long/ordinary (goal ≤ 1.5).
func BenchmarkQueryOfDeath(b *testing.B) {
	m := sentiment(b)
	var p Params
	_ = p.Check(TextClassification)
	long, short := make([]string, 64), make([]string, 64)
	for i := range long {
		long[i] = strings.Repeat("what a wonderful concert and a great evening ", 370)[:16<<10]
		short[i] = "what a wonderful concert and a great evening"
	}
	timeIt := func(texts []string) time.Duration {
		start := time.Now()
		if _, err := m.Predict(context.Background(), texts, p); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	timeIt(long)
	timeIt(short)
	for i := 0; i < b.N; i++ {
		s, l := timeIt(short), timeIt(long)
		b.ReportMetric(float64(s.Microseconds())/1000, "ordinary-ms")
		b.ReportMetric(float64(l.Microseconds())/1000, "16KB-ms")
		b.ReportMetric(float64(l)/float64(s), "ratio")
	}
}

// FuzzTruncateChars: the cut is a prefix of at most n runes, and valid
// UTF-8 stays valid.
func FuzzTruncateChars(f *testing.F) {
	f.Add("héllo wörld", 3)
	f.Add("日本語", 1)
	f.Add("\xff\xfeabc", 2)
	f.Fuzz(func(t *testing.T, s string, n int) {
		n %= 1 << 12
		got := truncateChars(s, n)
		if !strings.HasPrefix(s, got) {
			t.Fatalf("%q is not a prefix of %q", got, s)
		}
		if n > 0 && utf8.RuneCountInString(got) > n {
			t.Fatalf("%q has more than %d runes", got, n)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("cut %q of valid %q is invalid", got, s)
		}
	})
}
