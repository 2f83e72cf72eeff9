package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The usage spool is a folder on a volume that outlives the gateway's
// container. A gateway takes one slot of it (slot-N, held with flock, so
// that two gateways never share one) and keeps there:
//
//   - current.log: the journal of the interval in progress, one line per
//     request, copied into a shared memory mapping of the file before the
//     request is answered (no system call: the page cache is the kernel's,
//     so a gateway killed by SIGKILL or the OOM killer leaves every answered
//     request in the file; synced to disk at each cut); the rest of the file
//     is zeros, where a reader stops;
//   - batch-<id>.json: an interval's counts, aggregated, written at each
//     flush (temporary file, fsync, rename) until Postgres has them; its id
//     makes the write idempotent (usage_batches);
//   - journal-<id>.log: an interval's journal between its cut and its batch
//     file, renamed so that a crash in between still leaves one copy, never
//     two, of every request;
//   - rejected.log: rows Postgres refused for their own data (JSON lines).
//
// At start the gateway turns current.log and every journal-<id>.log without
// its batch file into batch files, and replays every batch file.
//
// The spool is bounded (Config.UsageSpoolBytes): beyond it requests are
// counted in memory only (nlpswarm_gateway_usage_unspooled_total), which a
// kill would lose.
type usageSpool struct {
	dir     string         // the slot
	lock    *os.File       // flock held on dir/lock
	journal *mappedJournal // current.log; nil when it could not be opened
	buf     []byte
	bytes   int64 // journal and batch files, roughly
	max     int64
	// unspooled counts requests counted in memory only (over the bound, or
	// the journal unwritable)
	unspooled func()
	warn      func(msg string, err error)
}

const usageSpoolSlots = 16

// openUsageSpool takes the first free slot of dir, recovers what a previous
// gateway left in it and returns the batches to replay.
func openUsageSpool(dir string, max int64, unspooled func(), warn func(string, error)) (*usageSpool, []*usageBatch, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("usage spool: %w", err)
	}
	s := &usageSpool{max: max, unspooled: unspooled, warn: warn}
	for i := 0; i < usageSpoolSlots && s.lock == nil; i++ {
		slot := filepath.Join(dir, "slot-"+strconv.Itoa(i))
		if err := os.MkdirAll(slot, 0o700); err != nil {
			return nil, nil, fmt.Errorf("usage spool: %w", err)
		}
		f, err := os.OpenFile(filepath.Join(slot, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("usage spool: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue // another gateway's
		}
		s.dir, s.lock = slot, f
	}
	if s.lock == nil {
		return nil, nil, fmt.Errorf("usage spool %s: all %d slots are held by other gateways", dir, usageSpoolSlots)
	}
	batches, err := s.recover()
	if err != nil {
		s.close()
		return nil, nil, fmt.Errorf("usage spool %s: %w", s.dir, err)
	}
	if err := s.openJournal(); err != nil {
		s.close()
		return nil, nil, fmt.Errorf("usage spool %s: %w", s.dir, err)
	}
	return s, batches, nil
}

func (s *usageSpool) path(name string) string { return filepath.Join(s.dir, name) }

func (s *usageSpool) openJournal() error {
	j, err := openMappedJournal(s.path("current.log"))
	if err != nil {
		return err
	}
	s.bytes += int64(j.n)
	s.journal = j
	return nil
}

// mappedJournal is a file written through a shared memory mapping: what is
// copied into it is in the page cache at once and outlives the process.
type mappedJournal struct {
	f    *os.File
	data []byte // the mapping, the file's size
	n    int    // bytes written; zeros after
}

const journalChunk = 1 << 20

func openMappedJournal(path string) (*mappedJournal, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := max(journalChunk, int(fi.Size()))
	j := &mappedJournal{f: f}
	if err := j.mapSize(size); err != nil {
		f.Close()
		return nil, err
	}
	if i := bytes.IndexByte(j.data, 0); i >= 0 { // a journal reopened: write after its lines
		j.n = i
	} else {
		j.n = len(j.data)
	}
	return j, nil
}

// mapSize grows the file to size, its blocks allocated, and maps all of it.
// Allocated, because a store into a hole of a shared mapping on a full disk
// is a SIGBUS, which would kill the gateway: fallocate says ENOSPC instead.
func (j *mappedJournal) mapSize(size int) error {
	err := unix.Fallocate(int(j.f.Fd()), 0, 0, int64(size))
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = j.f.Truncate(int64(size)) // a filesystem without fallocate
	}
	if err != nil {
		return fmt.Errorf("usage journal: %w", err)
	}
	if j.data != nil {
		if err := unix.Munmap(j.data); err != nil {
			return err
		}
		j.data = nil
	}
	data, err := unix.Mmap(int(j.f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap usage journal: %w", err)
	}
	j.data = data
	return nil
}

func (j *mappedJournal) write(b []byte) error {
	if j.n+len(b) > len(j.data) {
		if err := j.mapSize(max(2*len(j.data), j.n+len(b))); err != nil {
			return err
		}
	}
	j.n += copy(j.data[j.n:], b)
	return nil
}

// close syncs what was written, unmaps and cuts the zeros off the file.
func (j *mappedJournal) close() error {
	var errs []error
	if j.data != nil {
		errs = append(errs, unix.Msync(j.data, unix.MS_SYNC), unix.Munmap(j.data))
		j.data = nil
	}
	errs = append(errs, j.f.Truncate(int64(j.n)), j.f.Close())
	return errors.Join(errs...)
}

// recover turns the journals left by a gateway that stopped without a flush
// into batch files and loads every batch file.
func (s *usageSpool) recover() ([]*usageBatch, error) {
	if _, err := os.Stat(s.path("current.log")); err == nil {
		if err := os.Rename(s.path("current.log"), s.path("journal-"+newBatchID()+".log")); err != nil {
			return nil, err
		}
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			_ = os.Remove(s.path(name)) // an unfinished batch file: its journal is still there
		case strings.HasPrefix(name, "journal-") && strings.HasSuffix(name, ".log"):
			id := strings.TrimSuffix(strings.TrimPrefix(name, "journal-"), ".log")
			if _, err := os.Stat(s.path("batch-" + id + ".json")); err != nil {
				rows, bad, err := readJournal(s.path(name))
				if err != nil {
					return nil, err
				}
				if bad > 0 {
					s.warn(fmt.Sprintf("usage journal %s: %d malformed lines skipped", name, bad), nil)
				}
				if len(rows) > 0 {
					if err := s.writeBatch(&usageBatch{id: id, rows: rows}); err != nil {
						return nil, err
					}
				}
			}
			if err := os.Remove(s.path(name)); err != nil {
				return nil, err
			}
		}
	}
	return s.loadBatches()
}

// maxBatchFile bounds what one batch file may hold when it is read back.
const maxBatchFile = 64 << 20

func (s *usageSpool) loadBatches() ([]*usageBatch, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	type found struct {
		b   *usageBatch
		mod time.Time
	}
	var all []found
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "batch-") || !strings.HasSuffix(name, ".json") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		b, err := readBatch(s.path(name))
		if err != nil {
			// kept aside for a person, never replayed half-read
			s.warn("usage spool: unreadable batch file set aside as "+name+".bad", err)
			_ = os.Rename(s.path(name), s.path(name+".bad"))
			continue
		}
		s.bytes += fi.Size()
		all = append(all, found{b, fi.ModTime()})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mod.Before(all[j].mod) })
	out := make([]*usageBatch, len(all))
	for i, f := range all {
		out[i] = f.b
	}
	return out, nil
}

// append journals one request. It runs under Usage's lock.
func (s *usageSpool) append(k usageKey, c usageCount) {
	if s.journal == nil || s.bytes >= s.max {
		s.unspooled()
		return
	}
	s.buf = appendJournalLine(s.buf[:0], k, c)
	err := s.journal.write(s.buf)
	if err == nil {
		s.bytes += int64(len(s.buf))
	} else {
		s.unspooled()
		s.warn("usage journal write failed; counting in memory only", err)
	}
}

// journal line: day key account model requests texts errors name, or
// with tokens (generation, issue 15): day key account model requests texts
// errors input_tokens output_tokens name. (Lines without tokens keep the
// first form, which a gateway of before tokens reads too.)
func appendJournalLine(b []byte, k usageKey, c usageCount) []byte {
	b = append(b, k.day...)
	for _, v := range [...]int64{k.key, k.account, k.model, c.requests, c.texts, c.errors} {
		b = append(b, ' ')
		b = strconv.AppendInt(b, v, 10)
	}
	if c.inTokens != 0 || c.outTokens != 0 {
		b = append(b, ' ')
		b = strconv.AppendInt(b, c.inTokens, 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, c.outTokens, 10)
	}
	b = append(b, ' ')
	b = append(b, k.modelName...) // model names have no blanks nor newlines (modelmgr checks them)
	return append(b, '\n')
}

func parseJournalLine(line []byte) (usageKey, usageCount, bool) {
	f := bytes.SplitN(line, []byte{' '}, 10) // (names have no blanks: 8 fields, or 10 with tokens)
	if len(f) != 8 && len(f) != 10 {
		return usageKey{}, usageCount{}, false
	}
	if _, err := time.Parse(time.DateOnly, string(f[0])); err != nil {
		return usageKey{}, usageCount{}, false
	}
	var v [8]int64
	for i := range len(f) - 2 {
		n, err := strconv.ParseInt(string(f[i+1]), 10, 64)
		if err != nil || n < 0 {
			return usageKey{}, usageCount{}, false
		}
		v[i] = n
	}
	return usageKey{day: string(f[0]), key: v[0], account: v[1], model: v[2], modelName: string(f[len(f)-1])},
		usageCount{requests: v[3], texts: v[4], errors: v[5], inTokens: v[6], outTokens: v[7]}, true
}

// readJournal aggregates a journal up to its zeros (the rest of a mapping
// never cut); a last line without its newline (a torn write) and malformed
// lines are skipped (bad counts them).
func readJournal(path string) (map[usageKey]*usageCount, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	rows := map[usageKey]*usageCount{}
	bad := 0
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 && line[0] == 0 { // the mapping's zeros: the end
			return rows, bad, nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			bad++
			for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of an overlong line
				_, err = r.ReadSlice('\n')
			}
			continue
		}
		if err == io.EOF {
			if len(line) > 0 {
				bad++
			}
			return rows, bad, nil
		}
		if err != nil {
			return nil, 0, err
		}
		k, c, ok := parseJournalLine(line[:len(line)-1])
		if !ok {
			bad++
			continue
		}
		if cur := rows[k]; cur != nil {
			cur.add(c)
		} else {
			rows[k] = &c
		}
	}
}

// batchFile is a batch on disk.
type batchFile struct {
	ID   string     `json:"id"`
	Rows []batchRow `json:"rows"`
}

type batchRow struct {
	Key       int64  `json:"api_key_id"`
	Account   int64  `json:"account_id"`
	Model     int64  `json:"model_id"`
	ModelName string `json:"model"`
	Day       string `json:"day"`
	Requests  int64  `json:"requests"`
	Texts     int64  `json:"texts"`
	Errors    int64  `json:"errors"`
	InTokens  int64  `json:"input_tokens,omitempty"`
	OutTokens int64  `json:"output_tokens,omitempty"`
}

func rowOf(k usageKey, c usageCount) batchRow {
	return batchRow{k.key, k.account, k.model, k.modelName, k.day, c.requests, c.texts, c.errors, c.inTokens, c.outTokens}
}

func readBatch(path string) (*usageBatch, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var bf batchFile
	if err := json.NewDecoder(io.LimitReader(f, maxBatchFile)).Decode(&bf); err != nil {
		return nil, err
	}
	if len(bf.ID) < 16 || len(bf.ID) > 64 || filepath.Base(path) != "batch-"+bf.ID+".json" {
		return nil, fmt.Errorf("batch id %q does not match its file", bf.ID)
	}
	b := &usageBatch{id: bf.ID, rows: make(map[usageKey]*usageCount, len(bf.Rows))}
	for _, r := range bf.Rows {
		if _, err := time.Parse(time.DateOnly, r.Day); err != nil || r.Requests < 0 || r.Texts < 0 || r.Errors < 0 || r.InTokens < 0 || r.OutTokens < 0 {
			return nil, fmt.Errorf("malformed row %+v", r)
		}
		k := usageKey{key: r.Key, account: r.Account, model: r.Model, modelName: r.ModelName, day: r.Day}
		c := usageCount{r.Requests, r.Texts, r.Errors, r.InTokens, r.OutTokens}
		if cur := b.rows[k]; cur != nil {
			cur.add(c)
		} else {
			b.rows[k] = &c
		}
	}
	return b, nil
}

// writeBatch stores b as batch-<id>.json: temporary file, fsync, rename.
func (s *usageSpool) writeBatch(b *usageBatch) error {
	bf := batchFile{ID: b.id, Rows: make([]batchRow, 0, len(b.rows))}
	for k, c := range b.rows {
		bf.Rows = append(bf.Rows, rowOf(k, *c))
	}
	data, err := json.Marshal(bf)
	if err != nil {
		return err
	}
	if err := writeFileSynced(s.path("batch-"+b.id+".json"), data); err != nil {
		return err
	}
	s.bytes += int64(len(data))
	return nil
}

// writeFileSynced writes data to path whole or not at all: a temporary file
// beside it, fsync, rename, fsync of the folder (the rename itself).
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// cut ends the journal of the interval whose counts are b (under Usage's
// lock): the journal is renamed after b, a new one is opened, and b is
// written as its batch file, which replaces the journal.
func (s *usageSpool) cut(b *usageBatch) error {
	if s.journal != nil {
		if err := s.journal.close(); err != nil {
			s.warn("usage journal close", err)
		}
		s.journal = nil
		if err := os.Rename(s.path("current.log"), s.path("journal-"+b.id+".log")); err != nil {
			_ = s.openJournal() // keep journaling into the same file
			return err
		}
	}
	var jsize int64
	if fi, err := os.Stat(s.path("journal-" + b.id + ".log")); err == nil {
		jsize = fi.Size()
	}
	if err := s.openJournal(); err != nil {
		s.warn("usage journal reopen failed; counting in memory only until the next flush", err)
	}
	if err := s.writeBatch(b); err != nil {
		// the renamed journal still holds the interval: the next start
		// recovers it; this gateway keeps the batch in memory
		s.warn("usage batch file write failed; its journal stays", err)
		return nil
	}
	if err := os.Remove(s.path("journal-" + b.id + ".log")); err == nil {
		s.bytes -= jsize
	}
	return nil
}

// done forgets b once Postgres has it; rows Postgres refused go to
// rejected.log first.
func (s *usageSpool) done(b *usageBatch, rejected []rejectedRow) error {
	if len(rejected) > 0 {
		f, err := os.OpenFile(s.path("rejected.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(f)
		for _, r := range rejected {
			_ = enc.Encode(struct {
				Batch string `json:"batch"`
				batchRow
				Err string `json:"error"`
			}{b.id, rowOf(r.key, r.count), r.err.Error()})
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	var errs []error
	for _, name := range []string{"batch-" + b.id + ".json", "journal-" + b.id + ".log"} {
		fi, err := os.Stat(s.path(name))
		if err != nil {
			continue
		}
		if err := os.Remove(s.path(name)); err != nil {
			errs = append(errs, err)
			continue
		}
		s.bytes -= fi.Size()
	}
	return errors.Join(errs...)
}

// close releases the slot (the journal stays for the next gateway).
func (s *usageSpool) close() {
	if s.journal != nil {
		_ = s.journal.close()
		s.journal = nil
	}
	if s.lock != nil {
		_ = s.lock.Close() // releases the flock
		s.lock = nil
	}
}
