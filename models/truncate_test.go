package models

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
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

// BenchmarkQueryOfDeath: 64 texts of 16 KB against 64 ordinary texts and
// against 64 texts that fill the model's positions, in one process, each
// as a request takes them: Prepare on the request's goroutine, then
// Predict on the inference loop, the three interleaved in each iteration.
// ratio is long/ordinary (goal ≤ 1.5), full-ratio long/full (what
// truncating before tokenizing can at best reach), loop-ratio long/ordinary
// of the part that holds the replica's one inference loop: medians over the
// iterations of wall time, so that a burst of the machine's other load
// moves one iteration, not the figure (run -benchtime 15x or more); and
// cpu-ratio, full-cpu-ratio, the same of the process's CPU time (every
// thread, ORT's included), which others' load hardly moves.
func BenchmarkQueryOfDeath(b *testing.B) {
	m := sentiment(b)
	var p Params
	_ = p.Check(TextClassification)
	long, short := qodTexts()
	type cost struct{ prep, loop, cpu time.Duration }
	timeIt := func(texts []string) cost {
		cpu0, start := cpuTime(), time.Now()
		cut, _, err := m.Prepare(texts)
		if err != nil {
			b.Fatal(err)
		}
		prep := time.Since(start)
		if _, err := m.Predict(context.Background(), cut, p); err != nil {
			b.Fatal(err)
		}
		return cost{prep, time.Since(start) - prep, cpuTime() - cpu0}
	}
	// texts that fill the model's positions: the long texts as Prepare
	// cut them (what "truncate before tokenizing" can at best reduce one to)
	full, _, err := m.Prepare(long)
	if err != nil {
		b.Fatal(err)
	}
	full = append([]string(nil), full...)
	for i := range full {
		full[i] += " " // not the long texts' cache entries
	}
	timeIt(long)
	timeIt(short)
	timeIt(full)
	var s, f, l []cost
	for i := 0; i < b.N; i++ {
		s = append(s, timeIt(short))
		f = append(f, timeIt(full))
		l = append(l, timeIt(long))
	}
	med := func(cs []cost, part func(cost) time.Duration) time.Duration {
		d := make([]time.Duration, len(cs))
		for i, c := range cs {
			d[i] = part(c)
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	total := func(c cost) time.Duration { return c.prep + c.loop }
	sum := func(cs []cost) (t time.Duration) {
		for _, c := range cs {
			t += c.cpu
		}
		return t
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(med(s, total)), "ordinary-ms")
	b.ReportMetric(ms(med(f, total)), "full-ms")
	b.ReportMetric(ms(med(l, total)), "16KB-ms")
	b.ReportMetric(ms(med(l, func(c cost) time.Duration { return c.prep })), "16KB-prepare-ms")
	b.ReportMetric(float64(med(l, total))/float64(med(s, total)), "ratio")
	b.ReportMetric(float64(med(l, total))/float64(med(f, total)), "full-ratio")
	b.ReportMetric(float64(med(l, func(c cost) time.Duration { return c.loop }))/float64(med(s, func(c cost) time.Duration { return c.loop })), "loop-ratio")
	b.ReportMetric(float64(sum(l))/float64(sum(s)), "cpu-ratio")
	b.ReportMetric(float64(sum(l))/float64(sum(f)), "full-cpu-ratio")
}

// cpuTime is the CPU time this process has used, every thread's.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// qodTexts: 64 texts of 16 KB and 64 ordinary ones.
func qodTexts() (long, short []string) {
	long, short = make([]string, 64), make([]string, 64)
	for i := range long {
		long[i] = strings.Repeat("what a wonderful concert and a great evening ", 370)[:16<<10]
		short[i] = "what a wonderful concert and a great evening"
	}
	return long, short
}

// BenchmarkQueryOfDeathNeighbour: the latency of a small request (one
// ordinary text, one client in a loop) through /predict with batching on,
// alone and while another client sends the 64 × 16 KB request again and
// again; p99-ratio is with/alone (goal ≤ 2).
func BenchmarkQueryOfDeathNeighbour(b *testing.B) {
	m := sentiment(b)
	hs := newTestServer(b, m, TextClassification, DefaultBatchConfig(), DefaultLimits())
	long, _ := qodTexts()
	bigBody, _ := json.Marshal(PredictRequest{Texts: long})
	d := 3 * time.Second
	if v := os.Getenv("NLPSWARM_BENCH_SECONDS"); v != "" {
		if s, err := strconv.Atoi(v); err == nil {
			d = time.Duration(s) * time.Second
		}
	}
	small := func() []time.Duration {
		var lat []time.Duration
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			start := time.Now()
			resp, err := http.Post(hs.URL+"/predict", "application/json", strings.NewReader(`{"texts":["what a wonderful concert and a great evening"]}`))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(start))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return lat
	}
	p99 := func(l []time.Duration) time.Duration { return l[len(l)*99/100] }
	for i := 0; i < b.N; i++ {
		alone := small()
		stop, stopped := make(chan struct{}), make(chan struct{})
		var bigs atomic.Int64
		go func() {
			defer close(stopped)
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Post(hs.URL+"/predict", "application/json", bytes.NewReader(bigBody))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						bigs.Add(1)
					}
				}
			}
		}()
		with := small()
		close(stop)
		<-stopped
		b.ReportMetric(float64(p99(alone).Microseconds())/1000, "alone-p99-ms")
		b.ReportMetric(float64(p99(with).Microseconds())/1000, "with-p99-ms")
		b.ReportMetric(float64(p99(with))/float64(p99(alone)), "p99-ratio")
		b.ReportMetric(float64(bigs.Load()), "big-requests")
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
