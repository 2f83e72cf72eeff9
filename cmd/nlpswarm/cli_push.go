//go:build !agentonly

package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/term"

	"github.com/nlpswarm/nlpswarm/apiserver"
)

// modelFiles are the files push packs from a model folder.
// (model.gguf: a text-generation model, alone).
var modelFiles = []string{"model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json", "special_tokens_map.json", "model.gguf"}

// pushModel packs dir as tar.gz and streams it to the backoffice through a
// pipe (never whole in memory), with a progress bar on a terminal.
func pushModel(ctx context.Context, c *apiClient, name, dir string) error {
	var files []string
	var total int64
	for _, f := range modelFiles {
		st, err := os.Stat(filepath.Join(dir, f))
		if err == nil && st.Mode().IsRegular() {
			files = append(files, f)
			total += st.Size()
		}
	}
	if len(files) == 0 {
		return usageErr("%s holds none of %s", dir, strings.Join(modelFiles, ", "))
	}
	sort.Strings(files)
	var sent atomic.Int64
	// the boundary is fixed so that a retried request (a 503 while the
	// database restarts) streams the same body again under the same header
	boundary := multipart.NewWriter(io.Discard).Boundary()
	open := func() (io.ReadCloser, error) {
		sent.Store(0)
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeArchiveForm(pw, boundary, name, dir, files, &sent)) }()
		return pr, nil
	}
	body, _ := open()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.opts.server, "/")+"/api/v1/models/"+name+"/versions", body)
	if err != nil {
		body.Close()
		return usageErr("bad server URL %q", c.opts.server)
	}
	req.GetBody = open
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)

	done := make(chan struct{})
	tty := term.IsTerminal(int(os.Stderr.Fd()))
	start := time.Now()
	go progress(done, &sent, total, start, tty)
	var v versionRow
	err = c.send(req, &v)
	close(done)
	if err != nil {
		return err
	}
	if c.opts.json {
		return printJSON(v)
	}
	fmt.Printf("pushed %s version %d: %s, %s in %.1fs\n", name, v.Version, v.Digest, apiserver.FormatBytes(v.Size), time.Since(start).Seconds())
	return nil
}

// writeArchiveForm writes the multipart body of an upload: the field
// "archive", files of dir packed as tar.gz, counting bytes read into sent.
func writeArchiveForm(w io.Writer, boundary, name, dir string, files []string, sent *atomic.Int64) error {
	mw := multipart.NewWriter(w)
	if err := mw.SetBoundary(boundary); err != nil {
		return err
	}
	part, err := mw.CreateFormFile("archive", name+".tar.gz")
	if err != nil {
		return err
	}
	gz := gzip.NewWriter(part)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		if err := addFile(tw, filepath.Join(dir, f), f, sent); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return mw.Close()
}

func addFile(tw *tar.Writer, path, name string, sent *atomic.Int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: st.Size(), ModTime: st.ModTime(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := tw.Write(buf[:n]); werr != nil {
				return werr
			}
			sent.Add(int64(n))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// progress shows bytes, rate and ETA: a redrawn bar on a terminal, a plain
// line every few seconds otherwise.
func progress(done <-chan struct{}, sent *atomic.Int64, total int64, start time.Time, tty bool) {
	every := 200 * time.Millisecond
	if !tty {
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	line := func() string {
		n := sent.Load()
		secs := time.Since(start).Seconds()
		rate := float64(n) / max(secs, 0.001)
		eta := "?"
		if rate > 0 && n < total {
			eta = (time.Duration(float64(total-n)/rate) * time.Second).Round(time.Second).String()
		} else if n >= total {
			eta = "validating"
		}
		pct := 100 * float64(n) / float64(max(total, 1))
		return fmt.Sprintf("%5.1f%% %s / %s  %s/s  eta %s", pct, apiserver.FormatBytes(n), apiserver.FormatBytes(total), apiserver.FormatBytes(int64(rate)), eta)
	}
	for {
		select {
		case <-done:
			if tty {
				fmt.Fprintf(os.Stderr, "\r%s\n", bar(sent.Load(), total)+" "+line())
			}
			return
		case <-tick.C:
			if tty {
				fmt.Fprintf(os.Stderr, "\r%s %s\033[K", bar(sent.Load(), total), line())
			} else {
				fmt.Fprintf(os.Stderr, "push: %s\n", line())
			}
		}
	}
}

func bar(n, total int64) string {
	const width = 30
	filled := int(width * n / max(total, 1))
	filled = min(filled, width)
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}
