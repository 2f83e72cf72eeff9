package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// usageFixture is one account with a key and two models on a fresh database.
type usageFixture struct {
	e                 *env
	key               *Key
	sentiment, entity *Model
}

func newUsageFixture(t *testing.T) *usageFixture {
	e := newEnv(t, false)
	acc := e.account("acme", "")
	_, keyID := e.key(acc, "inference")
	f := &usageFixture{e: e, key: &Key{ID: keyID, AccountID: acc}}
	f.sentiment = &Model{ID: e.model("sentiment", "text-classification", 0), Name: "sentiment"}
	f.entity = &Model{ID: e.model("ner", "token-classification", 0), Name: "ner"}
	return f
}

// usageRow is a usage row as stored.
type usageRow struct {
	requests, texts, errors int64
	account                 *int64
	model                   string
}

func (f *usageFixture) row(t *testing.T, m *Model) (usageRow, bool) {
	t.Helper()
	var r usageRow
	err := f.e.db.Pool.QueryRow(context.Background(), `SELECT requests, texts, errors, account_id, model_name FROM usage
		WHERE api_key_id = $1 AND model_id = $2`, f.key.ID, m.ID).Scan(&r.requests, &r.texts, &r.errors, &r.account, &r.model)
	if err != nil {
		return r, false
	}
	return r, true
}

func (f *usageFixture) batches(t *testing.T) int {
	t.Helper()
	var n int
	if err := f.e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM usage_batches`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A model deleted within the flush interval no longer takes its neighbours'
// usage with it: its row is written (billing outlives the model, migration
// 00020) with the name the gateway saw, and deleting the model later keeps
// every row. A row Postgres refuses for its own data (here a counter that
// would overflow bigint) is skipped alone, recorded in the spool's
// rejected.log and counted; the batch's other rows land.
func TestUsageFlushPerRowOutcome(t *testing.T) {
	f := newUsageFixture(t)
	ctx := context.Background()
	gone := &Model{ID: f.e.model("old", "text-classification", 0), Name: "old"}
	// a row that cannot take one more text
	f.e.exec(`INSERT INTO usage (api_key_id, account_id, model_id, model_name, day, requests, texts)
		VALUES ($1, $2, $3, 'ner', (now() AT TIME ZONE 'UTC')::date, 1, $4)`, f.key.ID, f.key.AccountID, f.entity.ID, int64(math.MaxInt64))

	u := newUsage(f.e.db.Pool)
	rejected := 0
	u.rejected = func(n int) { rejected += n }
	dir := t.TempDir()
	if err := u.openSpool(dir, 1<<20, func() { t.Error("unspooled") }); err != nil {
		t.Fatal(err)
	}
	defer u.closeSpool()
	u.Record(f.key, f.sentiment, 3, false)
	u.Record(f.key, f.sentiment, 1, true)
	u.Record(f.key, gone, 2, false)
	u.Record(f.key, f.entity, 1, false) // overflows
	f.e.exec(`DELETE FROM models WHERE id = $1`, gone.ID)

	if err := u.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if r, ok := f.row(t, f.sentiment); !ok || r.requests != 2 || r.texts != 4 || r.errors != 1 || r.model != "sentiment" || r.account == nil || *r.account != f.key.AccountID {
		t.Errorf("sentiment row %+v (found %v)", r, ok)
	}
	if r, ok := f.row(t, gone); !ok || r.requests != 1 || r.texts != 2 || r.model != "old" {
		t.Errorf("the deleted model's usage: %+v (found %v), want its request kept under its name", r, ok)
	}
	if r, _ := f.row(t, f.entity); r.requests != 1 || r.texts != math.MaxInt64 {
		t.Errorf("the overflowing row changed: %+v", r)
	}
	if rejected != 1 {
		t.Errorf("rejected rows counted %d, want 1", rejected)
	}
	rej := readLines(t, filepath.Join(dir, "slot-0", "rejected.log"))
	if len(rej) != 1 || !strings.Contains(rej[0], `"model":"ner"`) || !strings.Contains(rej[0], "out of range") {
		t.Errorf("rejected.log: %q", rej)
	}
	if left := spoolFiles(t, dir, "batch-"); len(left) != 0 {
		t.Errorf("batch files left after a written flush: %v", left)
	}

	// billing outlives the model and the key
	f.e.exec(`DELETE FROM models WHERE id = $1`, f.sentiment.ID)
	f.e.exec(`DELETE FROM api_keys WHERE id = $1`, f.key.ID)
	if r, ok := f.row(t, f.sentiment); !ok || r.requests != 2 {
		t.Errorf("usage of a deleted model and key: %+v (found %v)", r, ok)
	}
}

// With Postgres unreachable the batch goes to the spool; a gateway started
// on that spool later writes it once; the same batch file replayed again
// (its commit's answer lost, say) counts nothing more. Requests journaled
// but never cut (a gateway killed between flushes) are recovered at the
// next start, once.
func TestUsageSpoolReplayedOnce(t *testing.T) {
	f := newUsageFixture(t)
	ctx := context.Background()
	dir := t.TempDir()

	down := unreachablePool(t)
	u1 := newUsage(down)
	if err := u1.openSpool(dir, 1<<20, func() { t.Error("unspooled") }); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		u1.Record(f.key, f.sentiment, 2, false)
	}
	if err := u1.Flush(ctx); err == nil {
		t.Fatal("flush to an unreachable Postgres succeeded")
	}
	batches := spoolFiles(t, dir, "batch-")
	if len(batches) != 1 {
		t.Fatalf("spool after a failed flush: %v, want one batch file", batches)
	}
	saved, err := os.ReadFile(batches[0])
	if err != nil {
		t.Fatal(err)
	}
	// more requests, then the process dies without a flush: they are in
	// the journal only
	for range 3 {
		u1.Record(f.key, f.entity, 1, false)
	}
	u1.closeSpool() // what the kernel does for a killed process

	u2 := newUsage(f.e.db.Pool)
	if err := u2.openSpool(dir, 1<<20, func() { t.Error("unspooled") }); err != nil {
		t.Fatal(err)
	}
	if len(u2.pending) != 2 {
		t.Fatalf("a restarted gateway found %d batches to replay, want 2 (the spooled one and the recovered journal)", len(u2.pending))
	}
	if err := u2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	u2.closeSpool()
	check := func(when string) {
		t.Helper()
		if r, _ := f.row(t, f.sentiment); r.requests != 5 || r.texts != 10 {
			t.Errorf("%s: sentiment %+v, want 5 requests, 10 texts", when, r)
		}
		if r, _ := f.row(t, f.entity); r.requests != 3 || r.texts != 3 {
			t.Errorf("%s: ner %+v, want 3 requests, 3 texts", when, r)
		}
	}
	check("after the replay")
	if n := f.batches(t); n != 2 {
		t.Errorf("usage_batches has %d ids, want 2", n)
	}
	if left := spoolFiles(t, dir, ""); len(left) != 0 {
		t.Errorf("spool after the replay: %v", left)
	}

	// the first batch file comes back (written, but its removal lost)
	if err := os.WriteFile(batches[0], saved, 0o600); err != nil {
		t.Fatal(err)
	}
	u3 := newUsage(f.e.db.Pool)
	if err := u3.openSpool(dir, 1<<20, func() {}); err != nil {
		t.Fatal(err)
	}
	defer u3.closeSpool()
	if len(u3.pending) != 1 {
		t.Fatalf("pending %d, want the restored batch", len(u3.pending))
	}
	if err := u3.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("after a second replay of the same batch")
	if len(u3.pending) != 0 {
		t.Errorf("the replayed batch is still pending")
	}
}

// Two gateways on one spool folder take two slots; the second never writes
// into the first one's journal.
func TestUsageSpoolSlots(t *testing.T) {
	dir := t.TempDir()
	a, b := newUsage(nil), newUsage(nil)
	if err := a.openSpool(dir, 1<<20, func() {}); err != nil {
		t.Fatal(err)
	}
	defer a.closeSpool()
	if err := b.openSpool(dir, 1<<20, func() {}); err != nil {
		t.Fatal(err)
	}
	defer b.closeSpool()
	if a.spool.dir == b.spool.dir {
		t.Fatalf("both gateways on %s", a.spool.dir)
	}
}

// Over its bound the spool stops journaling and says so; the counts stay in
// memory.
func TestUsageSpoolBounded(t *testing.T) {
	u := newUsage(nil)
	unspooled := 0
	if err := u.openSpool(t.TempDir(), 200, func() { unspooled++ }); err != nil {
		t.Fatal(err)
	}
	defer u.closeSpool()
	k, m := &Key{ID: 1, AccountID: 2}, &Model{ID: 3, Name: "sentiment"}
	for range 100 {
		u.Record(k, m, 1, false)
	}
	if used := u.spool.journal.n; used > 200+64 || unspooled == 0 || u.agg[usageKey{key: 1, account: 2, model: 3, modelName: "sentiment", day: u.now().UTC().Format("2006-01-02")}].requests != 100 {
		t.Errorf("journal %d bytes, unspooled %d, agg %v", u.spool.journal.n, unspooled, u.agg)
	}
}

// A journal's torn last line and garbage are skipped, the rest counted.
func TestReadJournalSkipsTornLines(t *testing.T) {
	k := usageKey{key: 1, account: 2, model: 3, modelName: "m-1", day: "2026-12-01"}
	line := string(appendJournalLine(nil, k, usageCount{1, 4, 0, 0, 0}))
	p := filepath.Join(t.TempDir(), "j.log")
	if err := os.WriteFile(p, []byte(line+"garbage\n"+line+"2026-12-01 1 2 3 -1 0 0 m\n"+line[:10]), 0o600); err != nil {
		t.Fatal(err)
	}
	// a journal left mapped by a killed gateway: its lines, then zeros
	pz := filepath.Join(t.TempDir(), "z.log")
	if err := os.WriteFile(pz, append([]byte(line+line), make([]byte, 100<<10)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if rows, bad, err := readJournal(pz); err != nil || bad != 0 || len(rows) != 1 || *rows[k] != (usageCount{2, 8, 0, 0, 0}) {
		t.Errorf("zero-padded journal: rows %v bad %d err %v", rows, bad, err)
	}
	rows, bad, err := readJournal(p)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 3 || len(rows) != 1 || *rows[k] != (usageCount{2, 8, 0, 0, 0}) {
		t.Errorf("rows %v bad %d", rows, bad)
	}
}

// unreachablePool is a pool whose server refuses every connection.
func unreachablePool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig("postgres://u@127.0.0.1:1/x?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// spoolFiles lists the spool's files whose name starts with prefix (the
// lock files left out).
func spoolFiles(t *testing.T, dir, prefix string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		if name != "lock" && name != "current.log" && strings.HasPrefix(name, prefix) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		out = append(out, s.Text())
	}
	var probe map[string]any
	for _, l := range out {
		if err := json.Unmarshal([]byte(l), &probe); err != nil {
			t.Errorf("rejected.log line %q: %v", l, err)
		}
	}
	return out
}

// Counts that land on one usage row merge before the upsert, whatever
// account or model name they carry (one statement may not upsert a row
// twice); other rows stay apart.
func TestByUsageRow(t *testing.T) {
	day := "2026-12-01"
	for _, c := range []struct {
		name string
		in   map[usageKey]*usageCount
		want map[usageKey]usageCount
	}{
		{"distinct rows stay", map[usageKey]*usageCount{
			{key: 1, account: 9, model: 2, modelName: "a", day: day}: {1, 1, 0, 0, 0},
			{key: 1, account: 9, model: 3, modelName: "b", day: day}: {2, 2, 1, 0, 0},
		}, map[usageKey]usageCount{
			{key: 1, account: 9, model: 2, modelName: "a", day: day}: {1, 1, 0, 0, 0},
			{key: 1, account: 9, model: 3, modelName: "b", day: day}: {2, 2, 1, 0, 0},
		}},
		{"one row under two names merges, names filled", map[usageKey]*usageCount{
			{key: 1, account: 0, model: 2, modelName: "", day: day}:  {1, 1, 0, 0, 0},
			{key: 1, account: 9, model: 2, modelName: "a", day: day}: {2, 3, 1, 0, 0},
		}, map[usageKey]usageCount{
			{key: 1, account: 9, model: 2, modelName: "a", day: day}: {3, 4, 1, 0, 0},
		}},
	} {
		got := byUsageRow(c.in)
		if len(got) != len(c.want) {
			t.Errorf("%s: %d rows, want %d: %v", c.name, len(got), len(c.want), got)
			continue
		}
		for k, w := range c.want {
			if g := got[k]; g == nil || *g != w {
				t.Errorf("%s: %+v = %v, want %v", c.name, k, g, w)
			}
		}
	}
}

// The cost of metering one request: in memory only, and with the spool's
// journal write (one write(2) under the lock), from 1 and from all CPUs.
func BenchmarkUsageRecord(b *testing.B) {
	k, m := &Key{ID: 1, AccountID: 2}, &Model{ID: 3, Name: "sentiment"}
	for _, spool := range []bool{false, true} {
		name := "memory"
		if spool {
			name = "spool"
		}
		u := newUsage(nil)
		if spool {
			if err := u.openSpool(b.TempDir(), 1<<40, func() {}); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				u.Record(k, m, 1, false)
			}
		})
		b.Run(name+"-parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					u.Record(k, m, 1, false)
				}
			})
		})
		u.closeSpool()
	}
}

// The journal's mapping grows past its first chunk; a journal read back
// unclosed (a killed gateway) and closed (a cut) holds every line.
func TestMappedJournalGrows(t *testing.T) {
	p := filepath.Join(t.TempDir(), "current.log")
	j, err := openMappedJournal(p)
	if err != nil {
		t.Fatal(err)
	}
	k := usageKey{key: 1, account: 2, model: 3, modelName: "sentiment", day: "2026-12-01"}
	line := appendJournalLine(nil, k, usageCount{1, 2, 0, 0, 0})
	n := 3*journalChunk/len(line) + 7
	for range n {
		if err := j.write(line); err != nil {
			t.Fatal(err)
		}
	}
	for _, when := range []string{"mapped", "closed"} {
		if when == "closed" {
			if err := j.close(); err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(p); fi.Size() != int64(n*len(line)) {
				t.Errorf("closed journal %d bytes, want %d", fi.Size(), n*len(line))
			}
		}
		rows, bad, err := readJournal(p)
		if err != nil || bad != 0 || rows[k] == nil || *rows[k] != (usageCount{int64(n), int64(2 * n), 0, 0, 0}) {
			t.Errorf("%s: rows %v bad %d err %v, want %d requests", when, rows, bad, err, n)
		}
	}
	// reopened, it appends after its lines
	j, err = openMappedJournal(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.write(line); err != nil {
		t.Fatal(err)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	if rows, _, _ := readJournal(p); rows[k].requests != int64(n+1) {
		t.Errorf("reopened journal: %d requests, want %d", rows[k].requests, n+1)
	}
}

// Journal lines carry a generation request's tokens (issue 15) in the long
// form only: a line without tokens keeps the form a gateway of before
// tokens reads, and both forms read back.
func TestJournalLineTokens(t *testing.T) {
	k := usageKey{key: 1, account: 2, model: 3, modelName: "tiny", day: "2026-12-07"}
	for _, c := range []struct {
		count usageCount
		line  string
	}{
		{usageCount{1, 1, 0, 0, 0}, "2026-12-07 1 2 3 1 1 0 tiny\n"},
		{usageCount{0, 0, 0, 7, 5}, "2026-12-07 1 2 3 0 0 0 7 5 tiny\n"},
		{usageCount{1, 1, 1, 0, 12}, "2026-12-07 1 2 3 1 1 1 0 12 tiny\n"},
	} {
		line := string(appendJournalLine(nil, k, c.count))
		if line != c.line {
			t.Errorf("%+v: line %q, want %q", c.count, line, c.line)
		}
		gk, gc, ok := parseJournalLine([]byte(strings.TrimSuffix(line, "\n")))
		if !ok || gk != k || gc != c.count {
			t.Errorf("%q read back as %+v %+v %v", line, gk, gc, ok)
		}
	}
	for _, bad := range []string{"2026-12-07 1 2 3 1 1 0 7 tiny", "2026-12-07 1 2 3 1 1 0 7 -5 tiny", "2026-12-07 1 2 3 1 1 0 x 5 tiny"} {
		if _, _, ok := parseJournalLine([]byte(bad)); ok {
			t.Errorf("%q accepted", bad)
		}
	}
	b := &usageBatch{id: strings.Repeat("ab", 16), rows: map[usageKey]*usageCount{k: {1, 1, 0, 7, 5}}}
	dir := t.TempDir()
	s := &usageSpool{dir: dir}
	if err := s.writeBatch(b); err != nil {
		t.Fatal(err)
	}
	got, err := readBatch(filepath.Join(dir, "batch-"+b.id+".json"))
	if err != nil || *got.rows[k] != (usageCount{1, 1, 0, 7, 5}) {
		t.Fatalf("batch file read back: %v %v", got, err)
	}
}

// TestUsageDayRollsOver: requests count in their own UTC day's row across
// midnight (Usage.day formats the date once a day and must see it change).
func TestUsageDayRollsOver(t *testing.T) {
	u := newUsage(nil)
	now := time.Date(2026, 12, 7, 23, 59, 59, 0, time.UTC)
	u.now = func() time.Time { return now }
	k, m := &Key{ID: 1, AccountID: 2}, &Model{ID: 3, Name: "sentiment"}
	u.Record(k, m, 1, false)
	u.Record(k, m, 2, false)
	now = now.Add(2 * time.Second)
	u.Record(k, m, 4, false)
	now = time.Date(2026, 12, 8, 1, 0, 0, 0, time.FixedZone("UTC+2", 2*3600)) // still the 7th in UTC
	u.Record(k, m, 8, false)
	row := func(day string) usageCount {
		if c := u.agg[usageKey{key: 1, account: 2, model: 3, modelName: "sentiment", day: day}]; c != nil {
			return *c
		}
		return usageCount{}
	}
	if c := row("2026-12-07"); c.requests != 3 || c.texts != 11 {
		t.Fatalf("2026-12-07: %+v, want 3 requests, 11 texts", c)
	}
	if c := row("2026-12-08"); c.requests != 1 || c.texts != 4 {
		t.Fatalf("2026-12-08: %+v, want 1 request, 4 texts", c)
	}
}
