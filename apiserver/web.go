package apiserver

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The backoffice web pages: server-rendered html/template pages under /ui,
// behind a login with the admin token. The token is exchanged for a signed
// session cookie (HttpOnly, SameSite=Lax, Secure on TLS or by option); every
// POST carries the session's CSRF token in a hidden field. Forms write through
// the same functions as the JSON API.

//go:embed web/templates/*.html
var templateFS embed.FS

//go:embed web/static
var staticFS embed.FS

// WebConfig tunes the web pages' sessions.
type WebConfig struct {
	// SecureCookie marks the session cookie Secure on every answer; without
	// it the cookie is Secure only on requests that came over TLS (the
	// stack serves plain HTTP on loopback, where a Secure cookie would never
	// come back). Set it behind a TLS-terminating proxy.
	SecureCookie bool
	// SessionTTL is how long a login lasts (default 12h).
	SessionTTL time.Duration
	// RandomSessionKey signs sessions with a key made at start, so every
	// restart logs everyone out; by default the key is derived from the
	// admin token, so sessions survive restarts and work across replicas,
	// and changing the token ends them all.
	RandomSessionKey bool
}

const (
	sessionCookie   = "nlpswarm_session"
	cookiePath      = "/ui"
	csrfField       = "csrf"
	maxWebFormBytes = 64 << 10
	ctxSession      = "nlpswarm.session"
)

// web holds the session key; logged-out sessions are rows of
// web_session_revocations (db), so that a logout holds on every replica and
// across restarts (issue 17).
type web struct {
	key    []byte
	ttl    time.Duration
	secure bool
	db     *pgxpool.Pool
	now    func() time.Time
}

func newWeb(cfg Config, db *pgxpool.Pool) *web {
	w := &web{ttl: cfg.Web.SessionTTL, secure: cfg.Web.SecureCookie, now: time.Now}
	if w.ttl <= 0 {
		w.ttl = 12 * time.Hour
	}
	if cfg.Web.RandomSessionKey || cfg.AdminToken == "" {
		w.key = make([]byte, 32)
		rand.Read(w.key) // never fails (crypto/rand since Go 1.24)
	} else {
		m := hmac.New(sha256.New, []byte(cfg.AdminToken))
		m.Write([]byte("nlpswarm web session key v1"))
		w.key = m.Sum(nil)
	}
	w.db = db
	return w
}

// session is what the signed cookie carries.
type session struct {
	ID      string
	Auth    bool
	Expires time.Time
}

func (w *web) mac(parts ...string) string {
	m := hmac.New(sha256.New, w.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (w *web) newSession(auth bool) *session {
	b := make([]byte, 16)
	rand.Read(b)
	return &session{ID: hex.EncodeToString(b), Auth: auth, Expires: w.now().Add(w.ttl).Truncate(time.Second)}
}

func (w *web) encode(s *session) string {
	auth := "0"
	if s.Auth {
		auth = "1"
	}
	payload := "v1." + s.ID + "." + auth + "." + strconv.FormatInt(s.Expires.Unix(), 10)
	return payload + "." + w.mac("session", payload)
}

// decode checks the cookie's signature and expiry (logout: revoked).
func (w *web) decode(v string) (*session, bool) {
	i := strings.LastIndexByte(v, '.')
	if i < 0 {
		return nil, false
	}
	payload, sig := v[:i], v[i+1:]
	if !hmac.Equal([]byte(sig), []byte(w.mac("session", payload))) {
		return nil, false
	}
	f := strings.Split(payload, ".")
	if len(f) != 4 || f[0] != "v1" || len(f[1]) != 32 {
		return nil, false
	}
	exp, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || !w.now().Before(time.Unix(exp, 0)) {
		return nil, false
	}
	return &session{ID: f[1], Auth: f[2] == "1", Expires: time.Unix(exp, 0)}, true
}

// revoked reports whether s was logged out (on any replica, before any
// restart).
func (w *web) revoked(ctx context.Context, s *session) (bool, error) {
	var gone bool
	err := w.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM web_session_revocations WHERE session_id = $1)`, s.ID).Scan(&gone)
	if err != nil {
		return false, fmt.Errorf("read session revocations: %w", err)
	}
	return gone, nil
}

// revoke ends a session everywhere (logout): every replica refuses its
// cookie from now on, restarts included. Revocations of sessions that have
// expired anyway are dropped on the way.
func (w *web) revoke(ctx context.Context, s *session) error {
	if s == nil {
		return nil
	}
	tx, err := w.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `DELETE FROM web_session_revocations WHERE expires_at < $1`, w.now()); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO web_session_revocations (session_id, expires_at) VALUES ($1, $2)
		ON CONFLICT (session_id) DO NOTHING`, s.ID, s.Expires); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

func (w *web) csrfToken(s *session) string { return w.mac("csrf", s.ID) }

func (w *web) csrfOK(s *session, got string) bool {
	if s == nil || got == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(w.csrfToken(s))) == 1
}

func (w *web) setCookie(c *gin.Context, s *session) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: sessionCookie, Value: w.encode(s), Path: cookiePath, Expires: s.Expires,
		MaxAge: int(time.Until(s.Expires).Seconds()), HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: w.secure || c.Request.TLS != nil,
	})
}

func (w *web) clearCookie(c *gin.Context) {
	http.SetCookie(c.Writer, &http.Cookie{Name: sessionCookie, Value: "", Path: cookiePath, MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: w.secure || c.Request.TLS != nil})
}

func sessionOf(c *gin.Context) *session {
	if v, ok := c.Get(ctxSession); ok {
		return v.(*session)
	}
	return nil
}

// webHeaders reads the session (if any) and sets the headers every page
// gets: no caching (pages carry CSRF tokens and, once, a new key), a strict
// content security policy (no inline script or style, nothing off-site).
func (s *Server) webHeaders(c *gin.Context) {
	s.webPrepare(c)
	c.Next()
}

func (s *Server) webPrepare(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if ck, err := c.Request.Cookie(sessionCookie); err == nil {
		if sess, ok := s.web.decode(ck.Value); ok {
			// a session that cannot be checked is no session (fail closed)
			gone, err := s.web.revoked(c.Request.Context(), sess)
			if err != nil {
				s.log.Warn("web session not checked", "err", err)
			}
			if err == nil && !gone {
				c.Set(ctxSession, sess)
			}
		}
	}
}

// webAuth lets logged-in sessions through; others go to the login page
// (GET) or get a 403 page (any other method).
func (s *Server) webAuth(c *gin.Context) {
	if sess := sessionOf(c); sess != nil && sess.Auth {
		c.Next()
		return
	}
	if c.Request.Method == http.MethodGet || c.Request.Method == http.MethodHead {
		c.Redirect(http.StatusSeeOther, "/ui/login?next="+url.QueryEscape(c.Request.URL.RequestURI()))
		c.Abort()
		return
	}
	s.renderError(c, http.StatusForbidden, "Your session has ended. Log in again, then repeat what you were doing.")
	c.Abort()
}

// webCSRF checks the hidden csrf field of a urlencoded form POST (the upload
// form checks it in the stream instead).
func (s *Server) webCSRF(c *gin.Context) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxWebFormBytes)
	if !s.web.csrfOK(sessionOf(c), c.PostForm(csrfField)) {
		s.csrfRefused(c)
		return
	}
	c.Next()
}

var errCSRF = &requestError{status: http.StatusForbidden, code: "csrf", message: "The form's security token is missing or wrong. Reload the page and try again."}

func (s *Server) csrfRefused(c *gin.Context) {
	s.log.Warn("web form refused: bad CSRF token", "path", c.FullPath(), "remote", c.ClientIP())
	s.renderError(c, errCSRF.status, errCSRF.message)
	c.Abort()
}

// localNext keeps a post-login redirect on this site's pages.
func localNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/ui/") ||
		strings.Contains(next, "\\") || strings.HasPrefix(next, "//") || strings.HasPrefix(u.Path, "/ui/login") {
		return "/ui/models"
	}
	return u.RequestURI()
}

// view is what every page template gets.
type view struct {
	Title   string
	Nav     string
	CSRF    string
	Authed  bool
	Flash   string
	Error   *viewError
	Refresh int // seconds between live refreshes of the element marked for it
	Data    any
}

type viewError struct {
	Message string
	Details []string
}

var (
	pagesOnce sync.Once
	pages     map[string]*template.Template
	pagesErr  error
	staticSum = map[string]string{}
)

func staticURL(name string) string {
	return "/ui/static/" + name + "?v=" + staticSum[name]
}

func loadPages() (map[string]*template.Template, error) {
	entries, err := fs.Glob(staticFS, "web/static/*")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := staticFS.ReadFile(e)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		staticSum[strings.TrimPrefix(e, "web/static/")] = hex.EncodeToString(sum[:6])
	}
	base, err := template.New("base").Funcs(templateFuncs).ParseFS(templateFS, "web/templates/layout.html", "web/templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("parse layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "web/templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		short := strings.TrimPrefix(n, "web/templates/")
		if short == "layout.html" || short == "partials.html" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", short, err)
		}
		out[short] = t
	}
	return out, nil
}

// render executes page name into a buffer first, so a template error is a
// clean 500 and never half a page.
func (s *Server) render(c *gin.Context, status int, name string, v *view) {
	pagesOnce.Do(func() { pages, pagesErr = loadPages() })
	if sess := sessionOf(c); sess != nil {
		v.CSRF = s.web.csrfToken(sess)
		v.Authed = sess.Auth
	}
	t := pages[name]
	var buf bytes.Buffer
	err := pagesErr
	if err == nil && t == nil {
		err = fmt.Errorf("no page %s", name)
	}
	if err == nil {
		err = t.ExecuteTemplate(&buf, "layout", v)
	}
	if err != nil {
		s.log.Error("render page", "page", name, "err", err)
		c.Data(http.StatusInternalServerError, "text/plain; charset=utf-8", []byte("internal error"))
		return
	}
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
}

func (s *Server) renderError(c *gin.Context, status int, msg string) {
	s.render(c, status, "error.html", &view{Title: http.StatusText(status), Error: &viewError{Message: msg}})
}

// pageError turns err into the status and message a page shows; unexpected
// errors are logged and shown as "internal error" only.
func (s *Server) pageError(c *gin.Context, err error) (int, *viewError) {
	status, _, msg, details, ok := classify(err)
	if !ok {
		s.log.Error("page failed", "path", c.FullPath(), "err", err)
	}
	return status, &viewError{Message: msg, Details: details}
}

func (s *Server) webRoutes(e *gin.Engine) {
	e.GET("/", func(c *gin.Context) { c.Redirect(http.StatusSeeOther, "/ui/") })
	static, _ := fs.Sub(staticFS, "web/static")
	files := http.StripPrefix("/ui/static/", http.FileServer(http.FS(static)))

	ui := e.Group("/ui", s.webHeaders)
	ui.GET("/static/*file", func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=86400")
		files.ServeHTTP(c.Writer, c.Request)
	})
	ui.GET("/login", s.loginPage)
	ui.POST("/login", s.webCSRF, s.login)

	p := ui.Group("", s.webAuth)
	p.GET("/", func(c *gin.Context) { c.Redirect(http.StatusSeeOther, "/ui/models") })
	p.POST("/logout", s.webCSRF, s.logout)
	p.GET("/models", s.modelsPage)
	p.POST("/models", s.webCSRF, s.createModelForm)
	p.GET("/models/:name", s.modelPage)
	p.GET("/models/:name/monitor", s.modelMonitorPage)
	p.GET("/cluster", s.clusterPage)
	p.POST("/models/:name/versions", s.uploadForm) // checks CSRF in the stream
	p.POST("/models/:name/deploy", s.webCSRF, s.deployForm)
	p.GET("/deployments", s.deploymentsPage)
	p.POST("/deployments/:name/scale", s.webCSRF, s.scaleForm)
	p.POST("/deployments/:name/undeploy", s.webCSRF, s.undeployForm)
	p.POST("/deployments/:name/promote", s.webCSRF, s.promoteForm)
	p.POST("/deployments/:name/rollback", s.webCSRF, s.rollbackForm)
	p.GET("/nodes", s.nodesPage)
	p.GET("/accounts", s.accountsPage)
	p.POST("/accounts", s.webCSRF, s.createAccountForm)
	p.GET("/accounts/:id", s.accountPage)
	p.POST("/accounts/:id/keys", s.webCSRF, s.createKeyForm)
	p.POST("/accounts/:id/keys/:kid/revoke", s.webCSRF, s.revokeKeyForm)
	p.POST("/accounts/:id/plan", s.webCSRF, s.setPlanForm)
	p.POST("/keys/revoke", s.webCSRF, s.revokePrefixForm)
	p.POST("/plans", s.webCSRF, s.createPlanForm)
	p.POST("/plans/:name", s.webCSRF, s.updatePlanForm)
	p.GET("/usage", s.usagePage)
}

// isWebPath tells the not-found handlers to answer with a page, not JSON.
func isWebPath(p string) bool { return p == "/ui" || strings.HasPrefix(p, "/ui/") }
