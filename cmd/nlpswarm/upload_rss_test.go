//go:build !agentonly

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The apiserver must stream an upload to disk, hash it on the way and unpack
// it for validation without ever holding it in memory. This test pushes a
// generated archive (the sentiment fixture plus an incompressible padding
// file, gzip without compression so generating it costs little CPU) to the
// real apiserver process and reads its peak RSS (VmHWM) afterwards.
//
// make test uses 256 MiB; NLPSWARM_UPLOAD_MIB=2048 gives the 2 GiB figure of
// the README (about a minute and 6 GiB of disk here).
func TestUploadPeakRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("large upload in -short mode")
	}
	fixture, _ := filepath.Abs(filepath.Join("..", "..", "..", "shared", "fixtures", "nlp", "sentiment"))
	if _, err := os.Stat(fixture); err != nil {
		t.Skipf("fixture absent: %v", err)
	}
	mib := int64(256)
	if v := os.Getenv("NLPSWARM_UPLOAD_MIB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("NLPSWARM_UPLOAD_MIB=%q: want a positive number", v)
		}
		mib = n
	}
	url, token, pid := startAPIServerPID(t)
	before := peakRSS(t, pid)

	runBinOK(t, []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}, "models", "create", "big", "--task", "text-classification")

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("archive", "big.tar.gz")
		if err == nil {
			err = writePaddedArchive(part, fixture, mib<<20)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequest("POST", url+"/api/v1/models/big/versions", pr)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	var v struct {
		Size int64 `json:"size_bytes"`
	}
	json.Unmarshal(body, &v)
	peak := peakRSS(t, pid)
	t.Logf("uploaded %d MiB archive (%d bytes stored) in %s (%.0f MiB/s); apiserver peak RSS %.1f MiB (%.1f MiB before the upload)",
		mib, v.Size, elapsed.Round(100*time.Millisecond), float64(v.Size)/(1<<20)/elapsed.Seconds(), float64(peak)/(1<<20), float64(before)/(1<<20))
	if peak >= 100<<20 {
		t.Fatalf("apiserver peak RSS %.1f MiB while receiving a %d MiB archive; want under 100 MiB", float64(peak)/(1<<20), mib)
	}
}

// writePaddedArchive writes a tar.gz of the model folder dir plus a file of
// pad pseudo-random bytes.
func writePaddedArchive(w io.Writer, dir string, pad int64) error {
	zw, err := gzip.NewWriterLevel(w, gzip.NoCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".safetensors") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.Name(), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "padding.bin", Mode: 0o644, Size: pad, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(tw, rng, pad); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// peakRSS is the VmHWM of process pid, in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

func runBinOK(t *testing.T, env []string, args ...string) string {
	t.Helper()
	stdout, stderr, code := runBin(t, env, args...)
	if code != 0 {
		t.Fatalf("nlpswarm %v: exit %d\n%s%s", args, code, stdout, stderr)
	}
	return stdout
}

// An upload may take longer than the server's read timeout as long as bytes
// keep coming; one that stalls is cut off after the upload idle time and
// leaves nothing behind.
func TestUploadDeadlines(t *testing.T) {
	fixture, _ := filepath.Abs(filepath.Join("..", "..", "..", "shared", "fixtures", "nlp", "sentiment"))
	if _, err := os.Stat(fixture); err != nil {
		t.Skipf("fixture absent: %v", err)
	}
	store := t.TempDir()
	url, token, _ := startAPIServerPID(t, "--readtimeout=1s", "--writetimeout=1s", "--upload.idle=1500ms", "--store.dir="+store)
	runBinOK(t, []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}, "models", "create", "slow", "--task", "text-classification")

	// upload sends the archive in ten pieces with pause between them,
	// stalling 3 s before piece stallAt (-1: never)
	upload := func(pause time.Duration, stallAt int) (int, string) {
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		go func() {
			part, _ := mw.CreateFormFile("archive", "slow.tar.gz")
			var archive bytes.Buffer
			if err := writePaddedArchive(&archive, fixture, 1<<20); err != nil {
				pw.CloseWithError(err)
				return
			}
			b := archive.Bytes()
			chunk := len(b)/10 + 1
			for i := 0; i < len(b); i += chunk {
				if i/chunk == stallAt {
					time.Sleep(3 * time.Second) // past the idle time
				}
				if _, err := part.Write(b[i:min(i+chunk, len(b))]); err != nil {
					pw.CloseWithError(err)
					return
				}
				time.Sleep(pause)
			}
			pw.CloseWithError(mw.Close())
		}()
		req, _ := http.NewRequest("POST", url+"/api/v1/models/slow/versions", pr)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	start := time.Now()
	if code, body := upload(400*time.Millisecond, -1); code != http.StatusCreated {
		t.Fatalf("steady upload over %s (read timeout 1s): %d %s", time.Since(start).Round(100*time.Millisecond), code, body)
	}
	t.Logf("a steady upload of %s outlived the 1 s read timeout", time.Since(start).Round(100*time.Millisecond))
	if code, body := upload(0, 5); code == http.StatusCreated {
		t.Fatalf("an upload that stalled 3 s (idle limit 1.5 s) was accepted: %s", body)
	}
	out := runBinOK(t, []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}, "models", "versions", "slow", "--json")
	if strings.Count(out, `"version"`) != 1 {
		t.Fatalf("want exactly the first version after the stalled upload:\n%s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(store, "tmp", "*")); len(left) != 0 {
		t.Fatalf("the stalled upload left %v", left)
	}
}
