//go:build !agentonly

package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// A push during a database restart: the backoffice answers 503 with
// Retry-After (nothing was stored), and push sends the whole archive again
// after that delay instead of failing; without Retry-After, or with
// --retries 0, the 503 is the answer.
func TestPushRetriesUnavailable(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("onnx bytes"), 0o644)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"id2label":{}}`), 0o644)

	var tries atomic.Int32
	unavailable := int32(2)
	retryAfter := "1"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := tries.Add(1)
		if n <= unavailable {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(503)
			io.WriteString(w, `{"error":{"code":"unavailable","message":"the database is unreachable"}}`)
			return
		}
		files, err := readArchiveForm(r)
		if err != nil || files["model.onnx"] != "onnx bytes" || files["config.json"] == "" {
			t.Errorf("try %d: archive %v %v", n, files, err)
		}
		w.WriteHeader(201)
		io.WriteString(w, `{"model":"m","version":1,"digest":"sha256:00","size":10}`)
	}))
	defer srv.Close()
	push := func(retries int) error {
		c := &apiClient{opts: cliOpts{server: srv.URL, retries: retries, json: true}, token: "t", http: srv.Client()}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return pushModel(ctx, c, "m", dir)
	}

	start := time.Now()
	if err := push(5); err != nil {
		t.Fatalf("push with two 503s: %v", err)
	}
	if n := tries.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("done in %v: it did not wait Retry-After (1 s) twice", d)
	}

	tries.Store(0)
	if err := push(0); err == nil || tries.Load() != 1 {
		t.Errorf("--retries 0: %v after %d requests, want the 503 after 1", err, tries.Load())
	}
	tries.Store(0)
	retryAfter = ""
	if err := push(5); err == nil || tries.Load() != 1 {
		t.Errorf("503 without Retry-After: %v after %d requests, want the 503 after 1", err, tries.Load())
	}
}

// readArchiveForm reads an upload's "archive" field: file name → contents.
func readArchiveForm(r *http.Request) (map[string]string, error) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, err
	}
	part, err := multipart.NewReader(r.Body, params["boundary"]).NextPart()
	if err != nil {
		return nil, err
	}
	gz, err := gzip.NewReader(part)
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return files, err
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
}
