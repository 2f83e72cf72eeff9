package apiserver

import (
	"context"
	"errors"
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

// uploadVersion streams the multipart field "archive" to a temp file (hashing
// as it goes), validates it and only then stores the blob and the row. Any
// failure leaves nothing behind.
func (s *Server) uploadVersion(c *gin.Context) {
	ctx := c.Request.Context()
	name := c.Param("name")
	m, err := s.reg.Get(ctx, name)
	if err != nil {
		s.fail(c, err)
		return
	}
	mt, params, err := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		abort(c, http.StatusBadRequest, "invalid_request", "want multipart/form-data with a field named archive")
		return
	}
	start := time.Now()
	mr := multipart.NewReader(c.Request.Body, params["boundary"])
	var rec modelmgr.Received
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			abort(c, http.StatusBadRequest, "invalid_request", "malformed multipart body")
			return
		}
		if part.FormName() != "archive" {
			part.Close()
			continue
		}
		rec, err = modelmgr.Receive(ctx, part, s.store.TempDir(), s.cfg.MaxUploadBytes)
		part.Close()
		if err != nil {
			s.fail(c, err)
			return
		}
		break
	}
	if rec.Path == "" {
		abort(c, http.StatusBadRequest, "invalid_request", "no multipart field named archive")
		return
	}
	keep := false
	defer func() {
		if !keep {
			os.Remove(rec.Path)
		}
	}()
	md, err := s.validator.Validate(ctx, rec.Path, s.store.TempDir(), m.Task)
	if err != nil {
		s.fail(c, err)
		return
	}
	if ctx.Err() != nil {
		return
	}
	if err := s.store.Put(ctx, rec.Path, rec.Digest); err != nil {
		s.fail(c, err)
		return
	}
	keep = true
	v, err := s.reg.AddVersion(context.WithoutCancel(ctx), name, rec.Digest, rec.Size, md)
	if err != nil {
		if used, _ := s.reg.DigestInUse(context.WithoutCancel(ctx), rec.Digest); !used {
			s.store.Delete(rec.Digest)
		}
		s.fail(c, err)
		return
	}
	s.log.Info("version stored", "model", name, "version", v.Version, "digest", v.Digest, "bytes", v.Size, "seconds", time.Since(start).Seconds())
	c.JSON(http.StatusCreated, v)
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
