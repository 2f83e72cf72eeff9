package gateway

import (
	"bytes"
	"cmp"
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

// loadSpec loads openapi.yaml with a maintained OpenAPI library and checks
// that it is a valid OpenAPI 3 document.
func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openapiYAML)
	if err != nil {
		t.Fatalf("openapi.yaml does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

func TestOpenAPIDocumentValid(t *testing.T) { loadSpec(t) }

// Every route of the routing table New registers is in the document, and
// no route is registered on the mux but through the table.
func TestReferenceDocumentsEveryRoute(t *testing.T) {
	doc := loadSpec(t)
	if len(routes) == 0 {
		t.Fatal("empty routing table")
	}
	for _, rt := range routes {
		method, path, ok := strings.Cut(rt.pattern, " ")
		if !ok {
			t.Errorf("route %q has no method: every customer route names one", rt.pattern)
			continue
		}
		item := doc.Paths.Value(path)
		if item == nil || item.GetOperation(method) == nil {
			t.Errorf("route %s is not in openapi.yaml", rt.pattern)
		}
	}
	// a mux registration with a literal pattern bypasses the table
	for file, f := range parseDir(t, ".") {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle") {
				return true
			}
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Value != `"/"` {
				t.Errorf("%s registers %s outside the routing table (handler.go's routes), so the reference cannot see it", file, lit.Value)
			}
			return true
		})
	}
}

// Every code an answer can carry is in x-error-codes, and every entry
// there is a code the code can send: the gateway's own (source gateway)
// and the runtime's, which the v2 infer route relays (source runtime).
func TestReferenceListsEveryErrorCode(t *testing.T) {
	listed := map[string]bool{}
	for _, c := range ErrorCodes() {
		if c.Meaning == "" || len(c.Status) == 0 {
			t.Errorf("error code %s lacks a meaning or a status", c.Code)
		}
		listed[c.Source+" "+c.Code] = true
	}
	neverSent := map[string]bool{
		"runtime canceled":   true, // the runtime's 499 is never written: the client has gone
		"runtime not_ready":  true, // the gateway tries another replica, then answers no_replica
		"runtime overloaded": true, // the gateway tries another replica, then answers its own overloaded
	}
	found := map[string]bool{}
	for source, dir := range map[string]string{"gateway": ".", "runtime": "../models"} {
		codes := emittedCodes(t, dir)
		if len(codes) < 5 {
			t.Fatalf("found only %v in %s: the scan looks in the wrong place", codes, dir)
		}
		for _, c := range codes {
			k := source + " " + c
			found[k] = true
			if !listed[k] && !neverSent[k] {
				t.Errorf("error code %q (%s) can be sent but openapi.yaml's x-error-codes lacks it", c, source)
			}
		}
	}
	for k := range listed {
		if !found[k] {
			t.Errorf("openapi.yaml lists error code %q, which no code sends", k)
		}
	}
	// the page shows them all
	page := string(theReference.html)
	for _, c := range ErrorCodes() {
		if !strings.Contains(page, "<code>"+c.Code+"</code>") {
			t.Errorf("the reference page lacks error code %s", c.Code)
		}
	}
}

func parseDir(t *testing.T, dir string) map[string]*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*ast.File{}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = f
	}
	return files
}

// emittedCodes finds the error codes the non-test code of the package in
// dir can send: string constants passed as a parameter named code (of a
// function of the package, or apierror.Write's and apierror.New's), put in
// a field named code (a struct of the package, positional or keyed), or
// assigned to a field named code or Reason. Constants of the package and of
// internal/runtimeapi are resolved.
func emittedCodes(t *testing.T, dir string) []string {
	t.Helper()
	files := parseDir(t, dir)
	consts := constStrings(parseDir(t, filepath.Join(dir, "..", "internal", "runtimeapi")), "runtimeapi.")
	for k, v := range constStrings(files, "") {
		consts[k] = v
	}
	codeParam := map[string]int{"apierror.Write": 2, "apierror.New": 0}
	codeField := map[string]int{}
	for _, f := range files {
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				i := 0
				for _, p := range d.Type.Params.List {
					for _, n := range p.Names {
						if n.Name == "code" {
							codeParam[d.Name.Name] = i
						}
						i++
					}
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					ts, ok := s.(*ast.TypeSpec)
					if !ok {
						continue
					}
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					i := 0
					for _, fl := range st.Fields.List {
						for _, n := range fl.Names {
							if n.Name == "code" {
								codeField[ts.Name.Name] = i
							}
							i++
						}
					}
				}
			}
		}
	}
	seen := map[string]bool{}
	add := func(e ast.Expr) {
		if s, ok := stringValue(e, consts); ok {
			seen[s] = true
		}
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				name := ""
				switch fn := n.Fun.(type) {
				case *ast.Ident:
					name = fn.Name
				case *ast.SelectorExpr:
					name = fn.Sel.Name
					if x, ok := fn.X.(*ast.Ident); ok && x.Name == "apierror" {
						name = "apierror." + name
					}
				}
				if i, ok := codeParam[name]; ok && i < len(n.Args) {
					add(n.Args[i])
				}
			case *ast.CompositeLit:
				id, ok := n.Type.(*ast.Ident)
				if !ok {
					return true
				}
				i, ok := codeField[id.Name]
				if !ok {
					return true
				}
				for j, el := range n.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "code" {
							add(kv.Value)
						}
					} else if j == i {
						add(el)
					}
				}
			case *ast.AssignStmt:
				if len(n.Lhs) != len(n.Rhs) {
					return true
				}
				for i, l := range n.Lhs {
					if sel, ok := l.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Reason" || sel.Sel.Name == "code") {
						add(n.Rhs[i])
					}
				}
			}
			return true
		})
	}
	var out []string
	for c := range seen {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

func stringValue(e ast.Expr, consts map[string]string) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
	case *ast.Ident:
		s, ok := consts[e.Name]
		return s, ok
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok {
			s, ok := consts[x.Name+"."+e.Sel.Name]
			return s, ok
		}
	}
	return "", false
}

func constStrings(files map[string]*ast.File, prefix string) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if v, ok := stringValue(vs.Values[i], nil); ok {
							out[prefix+n.Name] = v
						}
					}
				}
			}
		}
	}
	return out
}

// The gateway's real answers, good and bad, on every documented route,
// match the document: status documented, body valid against its schema.
// Each documented operation is called at least once.
func TestReferenceMatchesAnswers(t *testing.T) {
	doc := loadSpec(t)
	e := newEnv(t, false)
	acc := e.account("acme", "standard")
	key, _ := e.key(acc, "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.model("ner", "token-classification", 0, newRuntime(t, "token-classification"))
	e.model("embed", "feature-extraction", 0, newRuntimeWith(t, "feature-extraction", runtimeOpts{name: "embed"}))
	e.genModel("gen", 0)
	e.start(Config{})
	// as the gateway role serves it: with the health routes
	srv := httptest.NewServer(httpserver.Handler(e.gw, httpserver.NewHealth(), nil))
	defer srv.Close()

	calls := []struct {
		method, path, body, key string
		status                  int
	}{
		{"POST", "/v1/sentiment/sentiment", `{"text":"great"}`, key, 200},
		{"POST", "/v1/sentiment/classification", `{"texts":["a","b"],"parameters":{"top_k":1}}`, key, 200},
		{"POST", "/v1/ner/entities", `{"text":"Alice went home"}`, key, 200},
		{"POST", "/v1/embed/embeddings", `{"text":"abcd"}`, key, 200},
		{"POST", "/v1/embed/embeddings", `{"texts":["a","ab"]}`, key, 200},
		{"POST", "/v2/models/sentiment/infer", `{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["great"]}]}`, key, 200},
		{"POST", "/v2/models/embed/infer", `{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["a","b"]}]}`, key, 200},
		{"POST", "/v1/sentiment/sentiment", `{"text":"great"}`, "", 401},
		{"POST", "/v1/nope/sentiment", `{"text":"great"}`, key, 404},
		{"POST", "/v1/sentiment/entities", `{"text":"great"}`, key, 400},
		{"POST", "/v1/sentiment/sentiment", `{"text":""}`, key, 400},
		{"POST", "/v2/models/sentiment/infer", `{"inputs":[{"name":"text","shape":[1],"datatype":"FP32","data":[1]}]}`, key, 400},
		{"POST", "/v1/gen/generation", `{"text":"Once upon a time","max_length":5}`, key, 200},
		{"POST", "/v1/gen/generation", `{"text":""}`, key, 400},
		{"POST", "/v1/gen/chatbot", `{"input":"hi","context":"a helper","history":[{"input":"a","response":"b"}]}`, key, 200},
		{"POST", "/v1/sentiment/chatbot", `{"input":"hi"}`, key, 400},
		{"POST", "/v1/chat/completions", `{"model":"gen","messages":[{"role":"user","content":"hi"}]}`, key, 200},
		{"POST", "/v1/chat/completions", `{"model":"gen","stream":true,"messages":[{"role":"user","content":"hi"}]}`, key, 200},
		{"POST", "/v1/chat/completions", `{"model":"nope","messages":[]}`, key, 404},
		{"POST", "/v1/completions", `{"model":"gen","prompt":"once"}`, key, 200},
		{"POST", "/v1/completions", `{"model":"sentiment","prompt":"once"}`, key, 400},
		{"POST", "/v1/embeddings", `{"model":"gen","input":"abc"}`, key, 200},
		{"GET", "/v1/models", "", key, 200},
		{"GET", "/v1/models", "", "", 401},
		{"GET", "/v2/models/sentiment", "", key, 200},
		{"GET", "/v2/models/nope", "", key, 404},
		{"POST", "/v1/jobs", `{"model":"sentiment","task":"sentiment","texts":["a","b"]}`, key, 202}, // asynchronous jobs (jobs_test.go has the rest)
		{"POST", "/v1/jobs", `{"model":"sentiment","task":"sentiment","texts":["a"],"webhook":"ftp://x"}`, key, 400},
		{"GET", "/v1/jobs/job_00000000000000000000000000000000", "", key, 404},
		{"GET", "/v1/jobs/job_00000000000000000000000000000000/results", "", key, 404},
		{"GET", "/v1/jobs/job_00000000000000000000000000000000/errors", "", key, 404},
		{"POST", "/v1/jobs/job_00000000000000000000000000000000/cancel", "", key, 404},
		{"GET", "/v1/jobs/webhook-secret", "", key, 200},
		{"POST", "/v1/jobs/webhook-secret/rotate", "", key, 200},
		{"GET", "/healthz", "", "", 200},
		{"GET", "/readyz", "", "", 200},
		{"GET", "/openapi.yaml", "", "", 200},
		{"GET", "/openapi.json", "", "", 200},
		{"GET", "/docs", "", "", 200},
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}
	called := map[*openapi3.Operation]bool{}
	for _, c := range calls {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		req, _ := http.NewRequest(c.method, srv.URL+c.path, body)
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.key != "" {
			req.Header.Set("Authorization", "Token "+c.key)
		}
		route, params := findRoute(t, doc, c.method, c.path)
		if route == nil {
			continue
		}
		called[route.Operation] = true
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
		if c.status < 400 { // (the refusals are refused by the schema too)
			if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
				t.Errorf("%s %s %s: the request does not match the document: %v", c.method, c.path, c.body, err)
			}
			if c.body != "" {
				req.Body = io.NopCloser(strings.NewReader(c.body))
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s %s: status %d, want %d: %s", c.method, c.path, c.body, resp.StatusCode, c.status, raw)
			continue
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Body: io.NopCloser(bytes.NewReader(raw)), Options: opts}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			o := *opts
			o.ExcludeResponseBody = true
			out.Options = &o
		}
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			t.Errorf("%s %s %s: answer %d %.200s does not match the document: %v", c.method, c.path, c.body, resp.StatusCode, raw, err)
		}
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if !called[op] {
				t.Errorf("%s %s is documented but the test never calls it", method, path)
			}
		}
	}
}

var pathParam = regexp.MustCompile(`\{(\w+)\}`)

// findRoute finds the documented operation of method and a concrete path:
// of the templates that match, the one with the fewest parameters, as the
// gateway's routing does (/v1/chat/completions before /v1/{model}/{task}).
func findRoute(t *testing.T, doc *openapi3.T, method, path string) (*routers.Route, map[string]string) {
	t.Helper()
	tmpls := slices.Collect(maps.Keys(doc.Paths.Map()))
	slices.SortFunc(tmpls, func(a, b string) int {
		return cmp.Or(cmp.Compare(strings.Count(a, "{"), strings.Count(b, "{")), strings.Compare(a, b))
	})
	for _, tmpl := range tmpls {
		item := doc.Paths.Value(tmpl)
		names := pathParam.FindAllStringSubmatch(tmpl, -1)
		pat := "^" + regexp.QuoteMeta(tmpl) + "$"
		for _, n := range names {
			pat = strings.Replace(pat, regexp.QuoteMeta(n[0]), `([^/]+)`, 1)
		}
		m := regexp.MustCompile(pat).FindStringSubmatch(path)
		if m == nil {
			continue
		}
		op := item.GetOperation(method)
		if op == nil {
			t.Errorf("%s %s: the document has %s but not this method", method, path, tmpl)
			return nil, nil
		}
		params := map[string]string{}
		for i, n := range names {
			params[n[1]] = m[i+1]
		}
		return &routers.Route{Spec: doc, Path: tmpl, PathItem: item, Method: method, Operation: op}, params
	}
	t.Errorf("%s %s is not in the document", method, path)
	return nil, nil
}

// The page shows every route and every schema of the document.
func TestReferencePage(t *testing.T) {
	doc := loadSpec(t)
	page := string(theReference.html)
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !strings.Contains(page, "<code>"+method+" "+path+"</code>") {
				t.Errorf("the page lacks %s %s", method, path)
			}
		}
	}
	for name := range doc.Components.Schemas {
		if !strings.Contains(page, `id="schema-`+name+`"`) {
			t.Errorf("the page lacks schema %s", name)
		}
	}
	if os.Getenv("REFERENCE_HTML") != "" { // to look at it: REFERENCE_HTML=/tmp/ref.html
		_ = os.WriteFile(os.Getenv("REFERENCE_HTML"), theReference.html, 0o644)
	}
}
