package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

var templateFuncs = template.FuncMap{
	"static": staticURL,
	"bytes":  FormatBytes,
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			return v.UTC().Format("2006-01-02 15:04 UTC")
		case *time.Time:
			if v != nil {
				return v.UTC().Format("2006-01-02 15:04 UTC")
			}
		}
		return "—"
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	// pct writes a fraction as a percentage: 0.125 → "12.5%"
	"pct": func(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" },
	"cores": func(nano int64) string {
		return strconv.FormatFloat(float64(nano)/1e9, 'f', -1, 64)
	},
	"short": func(digest string) string {
		if len(digest) > 19 {
			return digest[:19] + "…"
		}
		return digest
	},
	"add": func(a, b int) int { return a + b },
	"percent": func(part, whole int64) string {
		if whole <= 0 {
			return "—"
		}
		return strconv.FormatFloat(float64(part)*100/float64(whole), 'f', 1, 64) + " %"
	},
	"join": strings.Join,
	"kv": func(m map[string]string) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + "=" + m[k]
		}
		return strings.Join(keys, ", ")
	},
}

// flash is the message a redirect after a successful form asks for; only
// fixed texts, never anything taken from the request.
func flash(c *gin.Context) string {
	switch c.Query("done") {
	case "created":
		return "Created."
	case "uploaded":
		if v, err := strconv.Atoi(c.Query("v")); err == nil {
			return fmt.Sprintf("Version %d was uploaded, validated and stored.", v)
		}
		return "The archive was uploaded, validated and stored."
	case "deployed":
		return "Deployment written; the scheduler is placing the replicas."
	case "scaled":
		return "Replica count written; the scheduler is converging."
	case "undeployed":
		return "Undeployed; the scheduler removes the service."
	case "revoked":
		return "Key revoked. Requests with it are refused from now on."
	case "plan":
		return "Plan changed; the gateways apply it within seconds."
	case "planupdated":
		return "Plan updated; the gateways apply it within seconds."
	case "loggedout":
		return "You are logged out."
	}
	return ""
}

// show renders page, or an error page for err.
func (s *Server) show(c *gin.Context, page string, v *view, err error) {
	if err != nil {
		status, ve := s.pageError(c, err)
		s.render(c, status, "error.html", &view{Title: http.StatusText(status), Error: ve})
		return
	}
	if v.Flash == "" {
		v.Flash = flash(c)
	}
	s.render(c, http.StatusOK, page, v)
}

// formFailed shows the form's page again with the reason it was refused.
func (s *Server) formFailed(c *gin.Context, page string, err error, load func() (*view, error)) {
	status, ve := s.pageError(c, err)
	v, lerr := load()
	if lerr != nil {
		s.show(c, page, nil, lerr)
		return
	}
	v.Error = ve
	s.render(c, status, page, v)
}

func seeOther(c *gin.Context, path string, q url.Values) {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	c.Redirect(http.StatusSeeOther, path)
}

// --- login

func (s *Server) loginPage(c *gin.Context) {
	next := localNext(c.Query("next"))
	sess := sessionOf(c)
	if sess != nil && sess.Auth {
		c.Redirect(http.StatusSeeOther, next)
		return
	}
	if sess == nil {
		sess = s.web.newSession(false)
		s.web.setCookie(c, sess)
		c.Set(ctxSession, sess)
	}
	s.show(c, "login.html", &view{Title: "Log in", Data: next}, nil)
}

func (s *Server) login(c *gin.Context) {
	next := localNext(c.PostForm("next"))
	if !tokenEqual(c.PostForm("token"), s.cfg.AdminToken) {
		// only wrong tokens meet the throttle: the right one always logs in,
		// whoever else guesses from the same address
		if s.refuseIfGuessing(c, true) {
			return
		}
		s.authFails.failed(c.RemoteIP())
		s.log.Warn("web login refused", "remote", c.RemoteIP())
		s.render(c, http.StatusUnauthorized, "login.html", &view{Title: "Log in", Data: next,
			Error: &viewError{Message: "That is not the admin token."}})
		return
	}
	// a fresh session id: a session fixed before login is worth nothing after
	if err := s.web.revoke(c.Request.Context(), sessionOf(c)); err != nil {
		status, ve := s.pageError(c, err)
		s.render(c, status, "login.html", &view{Title: "Log in", Data: next, Error: ve})
		return
	}
	sess := s.web.newSession(true)
	s.web.setCookie(c, sess)
	s.log.Info("web login", "remote", c.RemoteIP())
	c.Redirect(http.StatusSeeOther, next)
}

func (s *Server) logout(c *gin.Context) {
	if err := s.web.revoke(c.Request.Context(), sessionOf(c)); err != nil {
		// the cookie would still open the pages elsewhere: say so, keep it
		status, ve := s.pageError(c, err)
		s.render(c, status, "error.html", &view{Title: "Log out", Error: ve})
		return
	}
	s.web.clearCookie(c)
	seeOther(c, "/ui/login", url.Values{"done": {"loggedout"}})
}

// --- models

// depView is a deployment with the scheduler's observation decoded.
type depView struct {
	Deployment
	Obs deployment.Observed
	// Stale: the scheduler has not acted on the latest desired state yet.
	Stale bool
}

func depViews(ds []Deployment) map[string]*depView {
	out := make(map[string]*depView, len(ds))
	for _, d := range ds {
		v := &depView{Deployment: d, Stale: d.ObservedGeneration < d.Generation}
		v.Obs = d.Observed
		out[d.Model] = v
	}
	return out
}

type modelRow struct {
	modelmgr.Model
	Dep *depView
}

func (s *Server) modelsView(c *gin.Context) (*view, error) {
	ctx := c.Request.Context()
	ms, err := s.reg.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	ds, _, err := s.queryDeployments(ctx, "")
	if err != nil {
		return nil, err
	}
	deps := depViews(ds)
	rows := make([]modelRow, len(ms))
	for i, m := range ms {
		rows[i] = modelRow{Model: m, Dep: deps[m.Name]}
	}
	return &view{Title: "Models", Nav: "models", Data: map[string]any{"Models": rows, "Tasks": modelmgr.Tasks}}, nil
}

func (s *Server) modelsPage(c *gin.Context) {
	v, err := s.modelsView(c)
	s.show(c, "models.html", v, err)
}

func (s *Server) createModelForm(c *gin.Context) {
	m, err := s.reg.Create(c.Request.Context(), modelmgr.NewModel{
		Name: strings.TrimSpace(c.PostForm("name")), Task: c.PostForm("task"), Description: c.PostForm("description"),
	})
	if err != nil {
		s.formFailed(c, "models.html", err, func() (*view, error) { return s.modelsView(c) })
		return
	}
	seeOther(c, "/ui/models/"+url.PathEscape(m.Name), url.Values{"done": {"created"}})
}

type versionRow struct {
	modelmgr.Version
	Meta modelmgr.Metadata
}

// deployValues are the deploy form's fields, as typed.
type deployValues struct {
	Version                               int
	Replicas                              string
	Memory, CPUs, GPUs, GPUMemory, Labels string
	Backend                               string // "", "go" or "ort"
	// autoscaling: off when AutoMax is empty
	AutoMin, AutoMax, AutoTarget, AutoDown, AutoIdle string
	// canary (issue 20): Rollout "" replaces the deployment, "canary" or
	// "shadow" deploys the version beside it
	Rollout, Weight, RollbackErrorRate, RollbackP99, RollbackWindow string
	Sticky                                                          bool
	VersionChoices                                                  []int
}

func (s *Server) modelView(c *gin.Context, name string, form *deployValues) (*view, error) {
	ctx := c.Request.Context()
	m, err := s.reg.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	vs, err := s.reg.Versions(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("versions of %s: %w", name, err)
	}
	rows := make([]versionRow, len(vs))
	choices := []int{}
	for i, v := range vs {
		rows[i] = versionRow{Version: v}
		_ = json.Unmarshal(v.Metadata, &rows[i].Meta)
		if v.Status == "ready" {
			choices = append(choices, v.Version)
		}
	}
	ds, _, err := s.queryDeployments(ctx, name)
	if err != nil {
		return nil, err
	}
	dep := depViews(ds)[name]
	if form == nil {
		form = &deployValues{Replicas: "1"}
		if dep != nil {
			form = deployValuesOf(dep.Deployment)
		}
	}
	form.VersionChoices = choices
	return &view{Title: "Model " + m.Name, Nav: "models", Data: map[string]any{
		"Model": m, "Versions": rows, "Dep": dep, "Form": form, "MaxUpload": s.cfg.MaxUploadBytes,
	}}, nil
}

func deployValuesOf(d Deployment) *deployValues {
	f := &deployValues{Version: d.Version, Replicas: strconv.Itoa(d.Replicas), Backend: d.Backend}
	if d.MemoryBytes > 0 {
		f.Memory = sizeInput(d.MemoryBytes)
	}
	if d.CPUs > 0 {
		f.CPUs = strconv.FormatFloat(d.CPUs, 'f', -1, 64)
	}
	if d.GPUs > 0 {
		f.GPUs = strconv.Itoa(d.GPUs)
	}
	if d.GPUMemoryBytes > 0 {
		f.GPUMemory = sizeInput(d.GPUMemoryBytes)
	}
	f.Labels = templateFuncs["kv"].(func(map[string]string) string)(d.PlacementLabels)
	if a := d.Autoscale; a != nil {
		f.AutoMin, f.AutoMax = strconv.Itoa(a.Min), strconv.Itoa(a.Max)
		f.AutoTarget = strconv.FormatFloat(a.TargetInflight, 'f', -1, 64)
		f.AutoDown, f.AutoIdle = time.Duration(a.ScaleDownDelay).String(), time.Duration(a.IdleToZero).String()
	}
	return f
}

// sizeInput writes a size the way ParseBytes reads it back.
func sizeInput(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (s *Server) modelPage(c *gin.Context) {
	v, err := s.modelView(c, c.Param("name"), nil)
	s.show(c, "model.html", v, err)
}

// uploadForm streams the form's archive through the same path as the JSON
// API; the CSRF field must come before the file (it does in the form).
func (s *Server) uploadForm(c *gin.Context) {
	name := c.Param("name")
	sess := sessionOf(c)
	gate := func(fields map[string]string) error {
		if !s.web.csrfOK(sess, fields[csrfField]) {
			return errCSRF
		}
		return nil
	}
	v, err := s.receiveVersion(c.Request.Context(), name, c.GetHeader("Content-Type"), s.uploadBody(c.Writer, c.Request), gate)
	if errors.Is(err, errCSRF) {
		s.csrfRefused(c)
		return
	}
	if err != nil {
		if clientClosed(c, err) {
			abortClientClosed(c)
			return
		}
		s.formFailed(c, "model.html", err, func() (*view, error) { return s.modelView(c, name, nil) })
		return
	}
	seeOther(c, "/ui/models/"+url.PathEscape(name), url.Values{"done": {"uploaded"}, "v": {strconv.Itoa(v.Version)}})
}

// parseDeployForm reads the deploy form into the JSON API's request.
func parseDeployForm(c *gin.Context) (DeploymentRequest, *deployValues, error) {
	f := &deployValues{Replicas: c.PostForm("replicas"), Memory: c.PostForm("memory"), CPUs: c.PostForm("cpus"),
		GPUs: c.PostForm("gpus"), GPUMemory: c.PostForm("gpu_memory"), Labels: c.PostForm("labels"), Backend: c.PostForm("backend"),
		AutoMin: c.PostForm("autoscale_min"), AutoMax: c.PostForm("autoscale_max"), AutoTarget: c.PostForm("autoscale_target_inflight"),
		AutoDown: c.PostForm("autoscale_scale_down_delay"), AutoIdle: c.PostForm("autoscale_idle_to_zero"),
		Rollout: c.PostForm("rollout"), Weight: c.PostForm("canary_weight"), Sticky: c.PostForm("canary_sticky") != "",
		RollbackErrorRate: c.PostForm("rollback_error_rate"), RollbackP99: c.PostForm("rollback_p99"), RollbackWindow: c.PostForm("rollback_window")}
	var req DeploymentRequest
	var err error
	if req.Canary, err = parseCanaryForm(f); err != nil {
		return req, f, err
	}
	if v := strings.TrimSpace(c.PostForm("version")); v != "" {
		if f.Version, err = strconv.Atoi(v); err != nil {
			return req, f, badRequest("version must be a number")
		}
	}
	req.Version = f.Version
	req.Backend = f.Backend // checked with the rest of the request
	if v := strings.TrimSpace(f.Replicas); v != "" || strings.TrimSpace(f.AutoMax) == "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return req, f, badRequest("replicas must be a whole number")
		}
		req.Replicas = &n
	}
	if err := parseAutoscaleForm(f, &req); err != nil {
		return req, f, err
	}
	if v := strings.TrimSpace(f.Memory); v != "" {
		b, err := ParseBytes(v)
		if err != nil {
			return req, f, badRequest("memory: " + err.Error())
		}
		req.Resources.Memory = Bytes(b)
	}
	if v := strings.TrimSpace(f.CPUs); v != "" {
		if req.Resources.CPUs, err = parseFinite(v); err != nil {
			return req, f, badRequest("CPUs must be a number like 0.5")
		}
	}
	if v := strings.TrimSpace(f.GPUs); v != "" {
		if req.Resources.GPUs, err = strconv.Atoi(v); err != nil {
			return req, f, badRequest("GPUs must be a whole number")
		}
	}
	if v := strings.TrimSpace(f.GPUMemory); v != "" {
		b, err := ParseBytes(v)
		if err != nil {
			return req, f, badRequest("GPU memory: " + err.Error())
		}
		req.Resources.GPUMemory = Bytes(b)
	}
	for _, kv := range strings.Split(f.Labels, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return req, f, badRequest("placement labels are key=value, separated by commas")
		}
		if req.Placement.Labels == nil {
			req.Placement.Labels = map[string]string{}
		}
		req.Placement.Labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return req, f, nil
}

// parseCanaryForm reads the optional canary fields: nil when the form
// replaces the deployment.
func parseCanaryForm(f *deployValues) (*CanaryRequest, error) {
	switch f.Rollout {
	case "":
		return nil, nil
	case "canary", "shadow":
	default:
		return nil, badRequest("rollout must be a replacement, a canary or a shadow")
	}
	c := &CanaryRequest{Shadow: f.Rollout == "shadow", Sticky: f.Sticky}
	if v := strings.TrimSuffix(strings.TrimSpace(f.Weight), "%"); v != "" && !c.Shadow {
		w, err := parseFinite(v)
		if err != nil {
			return nil, badRequest("canary weight must be a percentage like 5")
		}
		c.Weight = w
	}
	var rb RollbackRequest
	if v := strings.TrimSuffix(strings.TrimSpace(f.RollbackErrorRate), "%"); v != "" {
		r, err := parseFinite(v)
		if err != nil {
			return nil, badRequest("rollback error rate must be a percentage like 5")
		}
		rb.MaxErrorRate = r / 100
	}
	for _, d := range []struct {
		v    string
		into *Duration
		what string
	}{{f.RollbackP99, &rb.MaxP99, "rollback p99"}, {f.RollbackWindow, &rb.Window, "rollback window"}} {
		if v := strings.TrimSpace(d.v); v != "" {
			t, err := time.ParseDuration(v)
			if err != nil {
				return nil, badRequest(d.what + " must be a duration like 500ms or 30s")
			}
			*d.into = Duration(t)
		}
	}
	if rb != (RollbackRequest{}) {
		c.Rollback = &rb
	}
	return c, nil
}

// parseFinite reads a form's number; NaN and the infinities, which
// strconv.ParseFloat accepts and every range check lets through (NaN
// compares false with everything), are refused.
func parseFinite(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("not a finite number: %q", v)
	}
	return f, nil
}

// parseAutoscaleForm reads the optional autoscaling fields; empty fields
// take the autoscaler's defaults.
func parseAutoscaleForm(f *deployValues, req *DeploymentRequest) error {
	if strings.TrimSpace(f.AutoMax) == "" {
		return nil
	}
	a := &Autoscale{}
	var err error
	if a.Max, err = strconv.Atoi(strings.TrimSpace(f.AutoMax)); err != nil {
		return badRequest("autoscaling: the maximum must be a whole number")
	}
	if v := strings.TrimSpace(f.AutoMin); v != "" {
		if a.Min, err = strconv.Atoi(v); err != nil {
			return badRequest("autoscaling: the minimum must be a whole number")
		}
	}
	if v := strings.TrimSpace(f.AutoTarget); v != "" {
		if a.TargetInflight, err = parseFinite(v); err != nil {
			return badRequest("autoscaling: the target must be a number of requests in flight")
		}
	}
	for _, d := range []struct {
		in   string
		out  *Duration
		what string
	}{{f.AutoDown, &a.ScaleDownDelay, "scale-down delay"}, {f.AutoIdle, &a.IdleToZero, "idle time before zero"}} {
		if v := strings.TrimSpace(d.in); v != "" {
			dur, err := time.ParseDuration(v)
			if err != nil {
				return badRequest("autoscaling: the " + d.what + " is a duration like 30s or 5m")
			}
			*d.out = Duration(dur)
		}
	}
	req.Autoscale = a
	return nil
}

func (s *Server) deployForm(c *gin.Context) {
	name := c.Param("name")
	req, form, err := parseDeployForm(c)
	if err == nil {
		err = s.deploy(c.Request.Context(), name, req)
	}
	if err != nil {
		s.formFailed(c, "model.html", err, func() (*view, error) { return s.modelView(c, name, form) })
		return
	}
	seeOther(c, "/ui/deployments", url.Values{"done": {"deployed"}})
}

// --- deployments

func (s *Server) deploymentsView(c *gin.Context) (*view, error) {
	ds, _, err := s.queryDeployments(c.Request.Context(), "")
	if err != nil {
		return nil, err
	}
	for i := range ds {
		if ds[i].Canary != nil { // the per-version figures where two versions run (or ran)
			ds[i].Versions, ds[i].VersionsError = s.versionStats(c.Request.Context(), ds[i].Model)
		}
	}
	deps := depViews(ds)
	rows := make([]*depView, len(ds))
	for i, d := range ds {
		rows[i] = deps[d.Model]
	}
	return &view{Title: "Deployments", Nav: "deployments", Refresh: 3, Data: map[string]any{
		"Deployments": rows, "Max": MaxReplicas, "Now": time.Now().UTC().Format("15:04:05 UTC"),
	}}, nil
}

func (s *Server) deploymentsPage(c *gin.Context) {
	v, err := s.deploymentsView(c)
	s.show(c, "deployments.html", v, err)
}

func (s *Server) scaleForm(c *gin.Context) {
	n, err := strconv.Atoi(strings.TrimSpace(c.PostForm("replicas")))
	if err != nil {
		err = badRequest("replicas must be a whole number")
	} else {
		err = s.setReplicas(c.Request.Context(), c.Param("name"), n)
	}
	if err != nil {
		s.formFailed(c, "deployments.html", err, func() (*view, error) { return s.deploymentsView(c) })
		return
	}
	seeOther(c, "/ui/deployments", url.Values{"done": {"scaled"}})
}

func (s *Server) promoteForm(c *gin.Context) {
	if err := s.promoteCanary(c.Request.Context(), c.Param("name")); err != nil {
		s.formFailed(c, "deployments.html", err, func() (*view, error) { return s.deploymentsView(c) })
		return
	}
	seeOther(c, "/ui/deployments", url.Values{"done": {"promoting"}})
}

func (s *Server) rollbackForm(c *gin.Context) {
	if err := s.rollbackCanary(c.Request.Context(), c.Param("name"), "rolled back by an operator"); err != nil {
		s.formFailed(c, "deployments.html", err, func() (*view, error) { return s.deploymentsView(c) })
		return
	}
	seeOther(c, "/ui/deployments", url.Values{"done": {"rolled back"}})
}

func (s *Server) undeployForm(c *gin.Context) {
	if err := s.undeploy(c.Request.Context(), c.Param("name")); err != nil {
		s.formFailed(c, "deployments.html", err, func() (*view, error) { return s.deploymentsView(c) })
		return
	}
	seeOther(c, "/ui/deployments", url.Values{"done": {"undeployed"}})
}

// --- nodes

type replicaView struct {
	Model  string
	Engine string // the deployment's engine (Deployment.EngineText)
	deployment.TaskState
}

type gpuView struct {
	GPU
	UsedPct  int
	UsedBar  int // width of the used part of a 160-wide bar
	Assigned int64
	Others   []GPUProcess // the processes the platform did not place
}

type nodeView struct {
	Node
	Replicas []replicaView
	GPUs     []gpuView
}

func (s *Server) nodesPage(c *gin.Context) {
	ctx := c.Request.Context()
	nodes, err := s.queryNodes(ctx)
	if err != nil {
		s.show(c, "", nil, err)
		return
	}
	ds, _, err := s.queryDeployments(ctx, "")
	if err != nil {
		s.show(c, "", nil, err)
		return
	}
	deps := depViews(ds)
	out := make([]nodeView, len(nodes))
	for i, n := range nodes {
		nv := nodeView{Node: n}
		for _, d := range ds {
			for _, t := range deps[d.Model].Obs.Tasks {
				if t.Node == n.Hostname || t.Node == n.ID {
					nv.Replicas = append(nv.Replicas, replicaView{Model: d.Model, Engine: d.EngineText(), TaskState: t})
				}
			}
		}
		for _, g := range n.GPUs {
			gv := gpuView{GPU: g}
			if g.MemoryTotal > 0 {
				used := min(max(g.MemoryTotal-g.MemoryFree, 0), g.MemoryTotal)
				gv.UsedPct = int(used * 100 / g.MemoryTotal)
				gv.UsedBar = int(used * 160 / g.MemoryTotal)
			}
			for _, p := range g.Placed {
				gv.Assigned += p.MemoryBytes
			}
			for _, p := range g.Processes {
				if p.Model == "" {
					gv.Others = append(gv.Others, p)
				}
			}
			nv.GPUs = append(nv.GPUs, gv)
		}
		out[i] = nv
	}
	s.show(c, "nodes.html", &view{Title: "Nodes and GPUs", Nav: "nodes", Refresh: 10, Data: out}, nil)
}

// --- accounts and keys

func (s *Server) accountsView(c *gin.Context) (*view, error) {
	ctx := c.Request.Context()
	accs, err := s.queryAccounts(ctx, 0)
	if err != nil {
		return nil, err
	}
	plans, err := s.queryPlans(ctx)
	if err != nil {
		return nil, err
	}
	return &view{Title: "Accounts", Nav: "accounts", Data: map[string]any{"Accounts": accs, "Plans": plans}}, nil
}

func (s *Server) accountsPage(c *gin.Context) {
	v, err := s.accountsView(c)
	s.show(c, "accounts.html", v, err)
}

func (s *Server) createAccountForm(c *gin.Context) {
	a, err := s.insertAccount(c.Request.Context(), strings.TrimSpace(c.PostForm("name")), c.PostForm("plan"))
	if err != nil {
		s.formFailed(c, "accounts.html", err, func() (*view, error) { return s.accountsView(c) })
		return
	}
	seeOther(c, "/ui/accounts/"+strconv.FormatInt(a.ID, 10), url.Values{"done": {"created"}})
}

func pathID(c *gin.Context, param string) (int64, error) {
	id, err := strconv.ParseInt(c.Param(param), 10, 64)
	if err != nil || id <= 0 {
		return 0, &requestError{status: http.StatusNotFound, code: "not_found", message: "no such " + param}
	}
	return id, nil
}

// accountView is an account with its keys and its usage chart; newKey is
// the key just created, shown this once.
func (s *Server) accountView(c *gin.Context, newKey *Key) (*view, error) {
	ctx := c.Request.Context()
	id, err := pathID(c, "id")
	if err != nil {
		return nil, err
	}
	d, err := s.accountDetail(ctx, id)
	if err != nil {
		return nil, err
	}
	plans, err := s.queryPlans(ctx)
	if err != nil {
		return nil, err
	}
	charts, from, to, err := s.usageCharts(ctx, strconv.FormatInt(id, 10))
	if err != nil {
		return nil, err
	}
	return &view{Title: "Account " + d.Name, Nav: "accounts", Refresh: accountRefresh, Data: map[string]any{
		"Account": d.Account, "Detail": d, "Keys": d.Keys, "Plans": plans, "NewKey": newKey, "Charts": charts, "From": from, "To": to,
	}}, nil
}

// accountRefresh is how often an account page redraws its live limits.
const accountRefresh = 5

func (s *Server) accountPage(c *gin.Context) {
	v, err := s.accountView(c, nil)
	s.show(c, "account.html", v, err)
}

func (s *Server) createKeyForm(c *gin.Context) {
	id, err := pathID(c, "id")
	var k Key
	if err == nil {
		k, err = s.insertKey(c.Request.Context(), id, strings.TrimSpace(c.PostForm("name")))
	}
	if err != nil {
		s.formFailed(c, "account.html", err, func() (*view, error) { return s.accountView(c, nil) })
		return
	}
	// answered here, not redirected: this page is the key's one showing
	v, err := s.accountView(c, &k)
	if err != nil {
		s.show(c, "", nil, err)
		return
	}
	v.Flash = "Key " + k.Prefix + " created. Copy it now: it is not stored and will not be shown again."
	s.render(c, http.StatusCreated, "account.html", v)
}

func (s *Server) revokeKeyForm(c *gin.Context) {
	id, err := pathID(c, "id")
	var kid int64
	if err == nil {
		kid, err = pathID(c, "kid")
	}
	if err == nil {
		err = s.revoke(c.Request.Context(), id, kid)
	}
	if err != nil {
		s.formFailed(c, "account.html", err, func() (*view, error) { return s.accountView(c, nil) })
		return
	}
	seeOther(c, "/ui/accounts/"+strconv.FormatInt(id, 10), url.Values{"done": {"revoked"}})
}

// setPlanForm moves an account to another plan.
func (s *Server) setPlanForm(c *gin.Context) {
	id, err := pathID(c, "id")
	if err == nil {
		_, err = s.setAccountPlan(c.Request.Context(), id, c.PostForm("plan"))
	}
	if err != nil {
		s.formFailed(c, "account.html", err, func() (*view, error) { return s.accountView(c, nil) })
		return
	}
	seeOther(c, "/ui/accounts/"+strconv.FormatInt(id, 10), url.Values{"done": {"plan"}})
}

// revokePrefixForm revokes a key by its prefix, whichever account holds it.
func (s *Server) revokePrefixForm(c *gin.Context) {
	k, err := s.revokePrefix(c.Request.Context(), strings.TrimSpace(c.PostForm("prefix")))
	if err != nil {
		s.formFailed(c, "accounts.html", err, func() (*view, error) { return s.accountsView(c) })
		return
	}
	seeOther(c, "/ui/accounts/"+strconv.FormatInt(k.AccountID, 10), url.Values{"done": {"revoked"}})
}

// planFromForm reads a plan's figures from a form; name is taken as given.
func planFromForm(c *gin.Context, name string) (Plan, error) {
	p := Plan{Name: name}
	var err error
	if p.RequestsPerSecond, err = strconv.ParseFloat(strings.TrimSpace(c.PostForm("requests_per_second")), 64); err != nil || math.IsNaN(p.RequestsPerSecond) {
		return p, badRequest("requests per second must be a number, e.g. 2 or 0.5")
	}
	if p.Burst, err = strconv.Atoi(strings.TrimSpace(c.PostForm("burst"))); err != nil {
		return p, badRequest("burst must be a whole number")
	}
	q := strings.TrimSpace(c.PostForm("monthly_quota"))
	if q == "" {
		q = "0"
	}
	if p.MonthlyQuota, err = strconv.ParseInt(q, 10, 64); err != nil {
		return p, badRequest("the monthly quota must be a whole number (0: unlimited)")
	}
	for _, f := range []struct {
		field string
		into  *int64
	}{{"tokens_per_minute", &p.TokensPerMinute}, {"tokens_per_month", &p.TokensPerMonth}} {
		if v := strings.TrimSpace(c.PostForm(f.field)); v != "" {
			if *f.into, err = strconv.ParseInt(v, 10, 64); err != nil {
				return p, badRequest("tokens per minute and per month must be whole numbers (0: unlimited)")
			}
		}
	}
	return p, validPlan(p)
}

func (s *Server) createPlanForm(c *gin.Context) {
	p, err := planFromForm(c, strings.TrimSpace(c.PostForm("name")))
	if err == nil {
		_, err = s.insertPlan(c.Request.Context(), p)
	}
	if err != nil {
		s.formFailed(c, "accounts.html", err, func() (*view, error) { return s.accountsView(c) })
		return
	}
	seeOther(c, "/ui/accounts", url.Values{"done": {"created"}})
}

func (s *Server) updatePlanForm(c *gin.Context) {
	p, err := planFromForm(c, c.Param("name"))
	if err == nil {
		patch := PlanPatch{RequestsPerSecond: &p.RequestsPerSecond, Burst: &p.Burst, MonthlyQuota: &p.MonthlyQuota}
		if _, ok := c.GetPostForm("tokens_per_minute"); ok { // (a form without them keeps them)
			patch.TokensPerMinute = &p.TokensPerMinute
		}
		if _, ok := c.GetPostForm("tokens_per_month"); ok {
			patch.TokensPerMonth = &p.TokensPerMonth
		}
		_, err = s.updatePlan(c.Request.Context(), p.Name, patch)
	}
	if err != nil {
		s.formFailed(c, "accounts.html", err, func() (*view, error) { return s.accountsView(c) })
		return
	}
	seeOther(c, "/ui/accounts", url.Values{"done": {"planupdated"}})
}

// --- usage

// usageCharts draws the last 30 days (today included) of account ("" for
// every account), one chart per account with a bar segment per model.
func (s *Server) usageCharts(ctx context.Context, account string) ([]usageChart, string, string, error) {
	today := time.Now().UTC().Truncate(24 * time.Hour)
	first := today.AddDate(0, 0, -(usageDays - 1))
	from, to := first.Format(time.DateOnly), today.Format(time.DateOnly)
	rows, err := s.queryUsage(ctx, from, to, account, "")
	if err != nil {
		return nil, "", "", err
	}
	return buildUsageCharts(rows, first), from, to, nil
}

func (s *Server) usagePage(c *gin.Context) {
	charts, from, to, err := s.usageCharts(c.Request.Context(), "")
	s.show(c, "usage.html", &view{Title: "Usage, last 30 days", Nav: "usage", Data: map[string]any{
		"Charts": charts, "From": from, "To": to,
	}}, err)
}
