package apiserver

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// Config is what the API needs besides its dependencies.
type Config struct {
	AdminToken string
	// InternalToken is the key material of the runtimes' artifact
	// credentials (internal/artifactcred.Key): /internal/blobs/{digest}
	// takes only a credential for that digest, never the token itself.
	InternalToken  string
	MaxUploadBytes int64
	UploadIdle     time.Duration // an upload without progress for this long is cut off
	UploadTimeout  time.Duration // the longest an upload (with its validation) may take
	Web            WebConfig
	// SchedulerURL is where a scheduler serves its dry run
	// (GET /api/v1/plan relays it); "" answers 503.
	SchedulerURL string
	// SchedulerToken is the scheduler's read token, sent as bearer token
	// with that relay ("" : none, for a scheduler that requires none).
	SchedulerToken string
	// Redis is where the gateways count rate limits and quotas (under
	// RedisPrefix, internal/limitkeys' names); the account pages read it.
	// nil: the pages say the live figures are not configured.
	Redis       redis.Cmdable
	RedisPrefix string
	// PrometheusURL is the Prometheus whose query API the monitoring pages
	// draw from ("" : the pages say it is not configured).
	PrometheusURL string
}

// Server is the backoffice API.
type Server struct {
	cfg       Config
	db        *pgxpool.Pool
	reg       *modelmgr.Registry
	store     modelmgr.BlobStore
	validator modelmgr.Validator
	log       *slog.Logger
	engine    *gin.Engine // the backoffice: /api/v1 and /ui, the published port
	internal  *gin.Engine // /internal: runtimes' artifact downloads, the overlay only
	web       *web
	authFails *authFailures // failed admin/internal token checks per address
	// artifactKey checks the runtimes' per-digest credentials; now is their
	// clock (tests move it)
	artifactKey []byte
	now         func() time.Time
}

// New builds the API on db and store; validator checks uploads.
func New(cfg Config, db *pgxpool.Pool, store modelmgr.BlobStore, validator modelmgr.Validator, log *slog.Logger) *Server {
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = 10 << 30
	}
	gin.SetMode(gin.ReleaseMode)
	s := &Server{cfg: cfg, db: db, reg: &modelmgr.Registry{DB: db}, store: store, validator: validator, log: log, web: newWeb(cfg, db), authFails: newAuthFailures(),
		artifactKey: artifactcred.Key(cfg.InternalToken), now: time.Now}
	e := gin.New()
	e.Use(gin.Recovery())
	e.HandleMethodNotAllowed = true
	e.NoRoute(s.refuse(http.StatusNotFound, "not_found", "no such route", "There is no such page."))
	e.NoMethod(s.refuse(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed", "This page does not take that method."))

	// the internal endpoints are a separate handler that the apiserver
	// serves on its ops listener (--opslisten), which the stack does not
	// publish: the backoffice port answers /internal/* with 404
	ie := gin.New()
	ie.Use(gin.Recovery())
	ie.HandleMethodNotAllowed = true
	ie.NoRoute(func(c *gin.Context) { abort(c, http.StatusNotFound, "not_found", "no such route") })
	ie.NoMethod(func(c *gin.Context) {
		abort(c, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
	})
	internal := ie.Group("/internal", s.internalAuth)
	internal.GET("/blobs/:digest", s.getBlob)
	internal.HEAD("/blobs/:digest", s.getBlob)
	s.internal = ie

	v1 := e.Group("/api/v1", s.adminAuth)
	v1.GET("/openapi.json", s.openapi)
	v1.GET("/models", s.listModels)
	v1.POST("/models", s.createModel)
	v1.GET("/models/:name", s.getModel)
	v1.DELETE("/models/:name", s.deleteModel)
	v1.GET("/models/:name/versions", s.listVersions)
	v1.POST("/models/:name/versions", s.uploadVersion)
	v1.GET("/models/:name/deployment", s.getDeployment)
	v1.GET("/plan", s.getPlan)
	v1.PUT("/models/:name/deployment", s.putDeployment)
	v1.DELETE("/models/:name/deployment", s.deleteDeployment)
	v1.POST("/models/:name/scale", s.scale)
	v1.POST("/models/:name/promote", s.promote)
	v1.POST("/models/:name/rollback", s.rollback)
	v1.GET("/plans", s.listPlans)
	v1.POST("/plans", s.createPlan)
	v1.PATCH("/plans/:name", s.patchPlan)
	v1.GET("/accounts", s.listAccounts)
	v1.POST("/accounts", s.createAccount)
	v1.GET("/accounts/:id", s.getAccount)
	v1.PATCH("/accounts/:id", s.patchAccount)
	v1.GET("/accounts/:id/keys", s.listKeys)
	v1.POST("/accounts/:id/keys", s.createKey)
	v1.DELETE("/accounts/:id/keys/:kid", s.revokeKey)
	v1.DELETE("/keys/:prefix", s.revokeKeyByPrefix)
	v1.GET("/usage", s.usage)
	v1.GET("/nodes", s.nodes)
	s.webRoutes(e)
	s.engine = e
	return s
}

// Handler is the HTTP handler of the backoffice (API and pages), for the
// published port.
func (s *Server) Handler() http.Handler { return s.engine }

// InternalHandler serves /internal/blobs to runtimes; serve it only on an
// address that is reachable from the overlay, never on the published port.
func (s *Server) InternalHandler() http.Handler { return s.internal }

// Routes lists method and path of every route (for the OpenAPI check).
func (s *Server) Routes() gin.RoutesInfo { return s.engine.Routes() }

// refuse answers an unrouted request: a page under /ui, JSON elsewhere.
func (s *Server) refuse(status int, code, msg, page string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if isWebPath(c.Request.URL.Path) {
			s.webPrepare(c)
			s.renderError(c, status, page)
			return
		}
		abort(c, status, code, msg)
	}
}

func abort(c *gin.Context, status int, code, msg string, details ...string) {
	c.AbortWithStatusJSON(status, apierror.New(code, msg, details...))
}

func bearerToken(r *http.Request) string {
	return apikey.FromAuthorization(r.Header.Get("Authorization"))
}

func tokenEqual(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) adminAuth(c *gin.Context) {
	tok := bearerToken(c.Request)
	switch {
	case tok == "":
		c.Header("WWW-Authenticate", `Bearer realm="nlpswarm"`)
		abort(c, http.StatusUnauthorized, "unauthenticated", "missing bearer token")
	case tokenEqual(tok, s.cfg.AdminToken):
		// before the throttle: strangers sharing the admin's address (a
		// NAT, a proxy) must not lock the admin out by guessing
		c.Next()
	case strings.HasPrefix(tok, apikey.Scheme) || tokenEqual(tok, s.cfg.InternalToken):
		abort(c, http.StatusForbidden, "forbidden", "this key may not use the backoffice API")
	case s.refuseIfGuessing(c, false):
	default:
		s.authFails.failed(c.RemoteIP())
		abort(c, http.StatusUnauthorized, "unauthenticated", "invalid token")
	}
}

// internalAuth admits a runtime to /internal/blobs/{digest} only with an
// unexpired artifact credential for exactly that digest (issue 17 item 1):
// one tenant's runtime cannot read another's model, and the shared internal
// token, which runtimes no longer hold, opens nothing here.
func (s *Server) internalAuth(c *gin.Context) {
	tok := bearerToken(c.Request)
	if tok == "" {
		abort(c, http.StatusUnauthorized, "unauthenticated", "missing artifact credential")
		return
	}
	if artifactcred.LooksLike(tok) {
		switch err := artifactcred.Verify(s.artifactKey, tok, c.Param("digest"), s.now()); {
		case err == nil:
			c.Next()
		case errors.Is(err, artifactcred.ErrDigest):
			abort(c, http.StatusForbidden, "forbidden", "this credential is for another artifact")
		case errors.Is(err, artifactcred.ErrExpired):
			abort(c, http.StatusUnauthorized, "credential_expired", "artifact credential expired; the scheduler re-mints it")
		case s.refuseIfGuessing(c, false):
		default: // forged or tampered: a guess
			s.authFails.failed(c.RemoteIP())
			abort(c, http.StatusUnauthorized, "unauthenticated", "invalid artifact credential")
		}
		return
	}
	switch {
	case tokenEqual(tok, s.cfg.InternalToken) || tokenEqual(tok, s.cfg.AdminToken) || strings.HasPrefix(tok, apikey.Scheme):
		abort(c, http.StatusForbidden, "forbidden", "internal endpoints take a per-artifact credential")
	case s.refuseIfGuessing(c, false):
	default:
		s.authFails.failed(c.RemoteIP())
		abort(c, http.StatusUnauthorized, "unauthenticated", "invalid token")
	}
}

// requestError is a refusal with its own status, code and message, for the
// cases the domain errors below do not name.
type requestError struct {
	status        int
	code, message string
}

func (e *requestError) Error() string { return e.message }

func badRequest(msg string) error {
	return &requestError{status: http.StatusBadRequest, code: "invalid_request", message: msg}
}

// classify maps an error to the status, code, message and details both the
// JSON API and the web pages answer with. ok is false for an unexpected
// error, whose message must not be shown (it may name internals).
func classify(err error) (status int, code, msg string, details []string, ok bool) {
	var ve *modelmgr.ValidationError
	var re *requestError
	switch {
	case errors.As(err, &re):
		return re.status, re.code, re.message, nil, true
	case errors.As(err, &ve):
		return http.StatusUnprocessableEntity, "invalid_archive", "the archive was refused", ve.Reasons, true
	case errors.Is(err, modelmgr.ErrNotFound), errors.Is(err, deployment.ErrNotFound):
		return http.StatusNotFound, "not_found", err.Error(), nil, true
	case errors.Is(err, modelmgr.ErrExists), errors.Is(err, deployment.ErrConflict):
		return http.StatusConflict, "conflict", err.Error(), nil, true
	case errors.Is(err, modelmgr.ErrInvalid), errors.Is(err, deployment.ErrInvalid):
		return http.StatusBadRequest, "invalid_request", err.Error(), nil, true
	case errors.Is(err, modelmgr.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large", err.Error(), nil, true
	case badText(err):
		return http.StatusBadRequest, "invalid_request", "text must be UTF-8 without NUL characters", nil, true
	case dbUnavailable(err):
		return http.StatusServiceUnavailable, "unavailable", "the database is unreachable; nothing was changed, retry shortly", nil, true
	}
	return http.StatusInternalServerError, "internal", "internal error", nil, false
}

// dbUnavailable reports whether Postgres could not be reached or went away
// (a restart, a failover): a passing condition the client may retry, not a
// server bug. Writes run in transactions, so nothing was half-done.
//
// pgconn.ErrConnClosed is a pooled connection whose socket Postgres closed
// while it sat idle: the pool pings only connections idle over a second, so
// the next request's BEGIN (an upload's version row, right after its model
// lookup and validation) meets it as "conn closed", not as a connect error.
func dbUnavailable(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	var ne net.Error
	switch {
	case errors.As(err, &ce), pgconn.Timeout(err), errors.As(err, &ne), errors.Is(err, pgconn.ErrConnClosed):
		return true
	case errors.As(err, &pe):
		// 08: connection exception; 57P01-03: shutdown, crash, starting up
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	return errors.Is(err, io.ErrUnexpectedEOF)
}

// badText reports whether Postgres refused a text value: a NUL character or
// bytes that are not UTF-8 (in a name, a path, a query), which is the
// client's doing, not a server fault.
func badText(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "22021" || pe.Code == "22P05") // character_not_in_repertoire, untranslatable_character
}

// clientClosed reports whether err is the request's own context ending:
// net/http ends it when the client closes the connection.
func clientClosed(c *gin.Context, err error) bool {
	return errors.Is(err, context.Canceled) && c.Request.Context().Err() != nil
}

// abortClientClosed answers a request abandoned because its client closed
// the connection. Mostly nobody reads it; a client that only closed its
// sending side does, and without an answer net/http would send a bare 200.
func abortClientClosed(c *gin.Context) {
	abort(c, apierror.StatusClientClosed, "client_closed_request", "the request was abandoned: the client closed its connection")
}

// fail maps domain errors to statuses.
func (s *Server) fail(c *gin.Context, err error) {
	if clientClosed(c, err) {
		abortClientClosed(c)
		return
	}
	status, code, msg, details, ok := classify(err)
	switch {
	case !ok:
		s.log.Error("request failed", "path", c.FullPath(), "err", err)
	case status == http.StatusServiceUnavailable:
		s.log.Warn("database unreachable", "path", c.FullPath(), "err", err)
		c.Header("Retry-After", "2")
	}
	abort(c, status, code, msg, details...)
}
