package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/nlpswarm/nlpswarm/modelmgr"
)

func (s *Server) listModels(c *gin.Context) {
	ms, err := s.reg.List(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"models": ms})
}

func (s *Server) createModel(c *gin.Context) {
	var req modelmgr.NewModel
	if !decode(c, &req) {
		return
	}
	m, err := s.reg.Create(c.Request.Context(), req)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, m)
}

func (s *Server) getModel(c *gin.Context) {
	m, err := s.reg.Get(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, m)
}

func (s *Server) deleteModel(c *gin.Context) {
	ctx := c.Request.Context()
	m, err := s.reg.Get(ctx, c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if m.Deployed {
		if c.Query("force") != "true" {
			abort(c, http.StatusConflict, "deployed", "model "+m.Name+" is deployed; undeploy it first or pass ?force=true")
			return
		}
		if err := s.undeploy(ctx, m.Name); err != nil {
			s.fail(c, err)
			return
		}
	}
	if err := s.reg.Delete(ctx, m.Name); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) listVersions(c *gin.Context) {
	vs, err := s.reg.Versions(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"versions": vs})
}

// uploadVersion streams the multipart field "archive" into the store (see
// receiveVersion).
func (s *Server) uploadVersion(c *gin.Context) {
	v, err := s.receiveVersion(c.Request.Context(), c.Param("name"), c.GetHeader("Content-Type"), s.uploadBody(c.Writer, c.Request), nil)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, v)
}

// uploadGate sees the small form fields sent before the archive and may
// refuse the upload before a byte of the archive is read (the web form checks
// its CSRF token there).
type uploadGate func(fields map[string]string) error

const (
	maxFormFields    = 16
	maxFormFieldSize = 4 << 10
)

// receiveVersion streams the multipart field "archive" of body to a temp file
// (hashing as it goes), validates it and only then stores the blob and the
// row. Any failure leaves nothing behind. With a gate, the fields before the
// archive are read (small ones only) and handed to it; without one they are
// skipped. Both the JSON API and the web form upload through here.
func (s *Server) receiveVersion(ctx context.Context, name, contentType string, body io.Reader, gate uploadGate) (modelmgr.Version, error) {
	m, err := s.reg.Get(ctx, name)
	if err != nil {
		return modelmgr.Version{}, err
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		if gate != nil {
			if err := gate(nil); err != nil {
				return modelmgr.Version{}, err
			}
		}
		return modelmgr.Version{}, badRequest("want multipart/form-data with a field named archive")
	}
	start := time.Now()
	mr := multipart.NewReader(body, params["boundary"])
	fields := map[string]string{}
	var rec modelmgr.Received
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if fault := bodyFault(body, err); fault != nil {
			return modelmgr.Version{}, fault
		}
		if err != nil {
			return modelmgr.Version{}, badRequest("malformed multipart body")
		}
		if part.FormName() != "archive" {
			if gate != nil && len(fields) < maxFormFields {
				b, err := io.ReadAll(io.LimitReader(part, maxFormFieldSize))
				if err != nil {
					part.Close()
					return modelmgr.Version{}, badRequest("malformed multipart body")
				}
				fields[part.FormName()] = string(b)
			}
			part.Close()
			continue
		}
		if gate != nil {
			if err := gate(fields); err != nil {
				part.Close()
				return modelmgr.Version{}, err
			}
		}
		// Receive reads under a context that does not end with the
		// request's: net/http ends that one only once the body has been
		// read to its end, when its read-ahead sees the client close its
		// side. What is left to read then is already buffered here, and it
		// decides the answer (a body cut before its closing boundary is
		// 400, not a silent abort). A client gone mid-body fails the
		// body's own reads, and the upload deadlines bound a stall.
		rec, err = modelmgr.Receive(context.WithoutCancel(ctx), part, s.store.TempDir(), s.cfg.MaxUploadBytes)
		part.Close()
		if err != nil {
			if fault := bodyFault(body, err); fault != nil {
				return modelmgr.Version{}, fault
			}
			return modelmgr.Version{}, fmt.Errorf("receive archive for %s: %w", name, err)
		}
		break
	}
	if rec.Path == "" {
		if gate != nil {
			if err := gate(fields); err != nil {
				return modelmgr.Version{}, err
			}
		}
		return modelmgr.Version{}, badRequest("no multipart field named archive")
	}
	keep := false
	defer func() {
		if !keep {
			os.Remove(rec.Path)
		}
	}()
	md, err := s.validator.Validate(ctx, rec.Path, s.store.TempDir(), m.Task)
	if md.Sandbox.Unavailable != "" { // zero: the child ended without an answer
		s.log.Warn("upload validated without a sandbox", "model", name, "why", md.Sandbox.Unavailable)
	}
	if err != nil {
		return modelmgr.Version{}, err
	}
	if err := ctx.Err(); err != nil {
		return modelmgr.Version{}, fmt.Errorf("upload of %s: %w", name, err)
	}
	if err := s.store.Put(ctx, rec.Path, rec.Digest); err != nil {
		return modelmgr.Version{}, fmt.Errorf("store %s: %w", rec.Digest, err)
	}
	keep = true
	v, err := s.reg.AddVersion(context.WithoutCancel(ctx), name, rec.Digest, rec.Size, md)
	if err != nil {
		// the blob stays: another version may reference it (a duplicate
		// upload), and a database error says nothing about that; the blob
		// collector removes it once unreferenced past its grace period
		// (modelmgr.CollectBlobs, issue 18 item 5)
		return modelmgr.Version{}, err
	}
	s.log.Info("version stored", "model", name, "version", v.Version, "digest", v.Digest, "bytes", v.Size, "seconds", time.Since(start).Seconds(), "sandbox", md.Sandbox.String())
	return v, nil
}

// getBlob serves an archive to runtimes, with Range support.
func (s *Server) getBlob(c *gin.Context) {
	digest := c.Param("digest")
	if !modelmgr.ValidDigest(digest) {
		abort(c, http.StatusBadRequest, "invalid_digest", modelmgr.ErrBadDigest.Error())
		return
	}
	f, err := s.store.Open(digest)
	if errors.Is(err, os.ErrNotExist) {
		abort(c, http.StatusNotFound, "not_found", "no blob "+digest)
		return
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Content-Type", "application/octet-stream")
	c.Header("Docker-Content-Digest", digest)
	c.Header("ETag", `"`+digest+`"`)
	http.ServeContent(c.Writer, c.Request, "", st.ModTime(), f)
}

// decode reads a JSON body (at most 1 MiB), refusing unknown fields.
func decode(c *gin.Context, v any) bool {
	body := http.MaxBytesReader(c.Writer, c.Request.Body, 1<<20)
	if err := decodeJSON(body, v); err != nil {
		abort(c, http.StatusBadRequest, "invalid_json", err.Error())
		return false
	}
	return true
}
