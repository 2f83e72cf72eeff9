package gateway

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// The customer API reference: openapi.yaml is the one description of the
// customer routes, their bodies and every error code (x-error-codes); the
// gateway serves it as it is (GET /openapi.yaml), as JSON (GET
// /openapi.json) and as an HTML page rendered from it (GET /docs). The
// tests (reference_test.go) hold it to the code: every route of the routing
// table, every error code the gateway or a relayed runtime can send, and
// the gateway's real answers against its schemas.

//go:embed openapi.yaml
var openapiYAML []byte

// ErrorCode is one entry of the document's x-error-codes.
type ErrorCode struct {
	Code    string `yaml:"code" json:"code"`
	Status  []int  `yaml:"status" json:"status"`
	Source  string `yaml:"source" json:"source"` // gateway, or runtime: relayed on the v2 infer route
	Retry   bool   `yaml:"retry" json:"retry"`   // may be retried after Retry-After
	Meaning string `yaml:"meaning" json:"meaning"`
}

// apiDoc is the part of the document the page shows.
type apiDoc struct {
	Info struct {
		Title       string `yaml:"title"`
		Version     string `yaml:"version"`
		Description string `yaml:"description"`
	} `yaml:"info"`
	Tags []struct {
		Name        string `yaml:"name"`
		Description string `yaml:"description"`
	} `yaml:"tags"`
	Paths      map[string]map[string]docOperation `yaml:"paths"`
	ErrorCodes []ErrorCode                        `yaml:"x-error-codes"`
	Components struct {
		Schemas    map[string]docSchema `yaml:"schemas"`
		Parameters map[string]docParam  `yaml:"parameters"`
	} `yaml:"components"`
}

type docOperation struct {
	Tags        []string   `yaml:"tags"`
	Summary     string     `yaml:"summary"`
	Description string     `yaml:"description"`
	Security    *[]any     `yaml:"security"` // an empty list: no key
	Parameters  []docParam `yaml:"parameters"`
	RequestBody struct {
		Content map[string]struct {
			Schema   docSchema             `yaml:"schema"`
			Examples map[string]docExample `yaml:"examples"`
		} `yaml:"content"`
	} `yaml:"requestBody"`
	Responses map[string]struct {
		Ref         string `yaml:"$ref"`
		Description string `yaml:"description"`
		Content     map[string]struct {
			Examples map[string]docExample `yaml:"examples"`
		} `yaml:"content"`
	} `yaml:"responses"`
}

type docParam struct {
	Ref         string    `yaml:"$ref"`
	Name        string    `yaml:"name"`
	In          string    `yaml:"in"`
	Description string    `yaml:"description"`
	Schema      docSchema `yaml:"schema"`
}

type docExample struct {
	Value any `yaml:"value"`
}

type docSchema struct {
	Ref         string               `yaml:"$ref"`
	Type        string               `yaml:"type"`
	Description string               `yaml:"description"`
	Required    []string             `yaml:"required"`
	Properties  map[string]docSchema `yaml:"properties"`
	Items       *docSchema           `yaml:"items"`
	OneOf       []docSchema          `yaml:"oneOf"`
	Enum        []string             `yaml:"enum"`
}

// reference is the document in its three forms, built once.
type reference struct {
	doc  apiDoc
	json []byte
	html []byte
}

var theReference = mustReference(openapiYAML)

func mustReference(src []byte) *reference {
	ref, err := buildReference(src)
	if err != nil {
		panic("gateway: openapi.yaml: " + err.Error())
	}
	return ref
}

func buildReference(src []byte) (*reference, error) {
	ref := &reference{}
	if err := yaml.Unmarshal(src, &ref.doc); err != nil {
		return nil, err
	}
	var tree any
	if err := yaml.Unmarshal(src, &tree); err != nil {
		return nil, err
	}
	var err error
	if ref.json, err = json.MarshalIndent(tree, "", "  "); err != nil {
		return nil, fmt.Errorf("as JSON: %w", err)
	}
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, ref.page()); err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	ref.html = b.Bytes()
	return ref, nil
}

// ErrorCodes is every error code of the customer API with its statuses and
// meaning, as the reference lists them.
func ErrorCodes() []ErrorCode { return slices.Clone(theReference.doc.ErrorCodes) }

func (g *Gateway) serveOpenAPIYAML(w http.ResponseWriter, _ *http.Request) {
	serveStatic(w, "application/yaml", openapiYAML)
}

func (g *Gateway) serveOpenAPIJSON(w http.ResponseWriter, _ *http.Request) {
	serveStatic(w, "application/json", theReference.json)
}

func (g *Gateway) serveReference(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	serveStatic(w, "text/html; charset=utf-8", theReference.html)
}

func serveStatic(w http.ResponseWriter, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(body)
}

// The page's view of the document.

type pageRoute struct {
	Method, Path, Summary, Anchor string
	Description                   template.HTML
	Public                        bool
	Params                        []pageParam
	Body                          string // the request schema's name
	Examples                      []pageExample
	Responses                     []pageResponse
}

type pageParam struct{ Name, In, Description, Enum string }

type pageExample struct{ Name, JSON string }

type pageResponse struct {
	Status, Description string
	Examples            []pageExample
}

type pageSchema struct {
	Name, Description string
	Fields            []pageField
}

type pageField struct{ Name, Type, Description string }

type pageTag struct {
	Name        string
	Description template.HTML
	Routes      []pageRoute
}

type pageData struct {
	Title, Version string
	Description    template.HTML
	Tags           []pageTag
	Codes          []ErrorCode
	Schemas        []pageSchema
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// prose renders the document's text: paragraphs and `code`.
func prose(s string) template.HTML {
	var b strings.Builder
	for _, p := range strings.Split(strings.TrimSpace(s), "\n\n") {
		p = template.HTMLEscapeString(strings.Join(strings.Fields(p), " "))
		b.WriteString("<p>" + codeSpan.ReplaceAllString(p, "<code>$1</code>") + "</p>\n")
	}
	return template.HTML(b.String())
}

func refName(ref string) string { return ref[strings.LastIndexByte(ref, '/')+1:] }

func schemaType(s docSchema) string {
	switch {
	case s.Ref != "":
		return refName(s.Ref)
	case s.Type == "array" && s.Items != nil:
		return "array of " + schemaType(*s.Items)
	case len(s.OneOf) > 0:
		var alt []string
		for _, o := range s.OneOf {
			alt = append(alt, schemaType(o))
		}
		return "one of " + strings.Join(alt, ", ")
	case len(s.Enum) > 0:
		return s.Type + " (" + strings.Join(s.Enum, ", ") + ")"
	case s.Type == "":
		return "any"
	}
	return s.Type
}

func examples(m map[string]docExample) []pageExample {
	var out []pageExample
	for _, name := range sortedKeys(m) {
		b, _ := json.Marshal(m[name].Value)
		out = append(out, pageExample{Name: name, JSON: string(b)})
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var methodOrder = []string{"get", "post", "put", "patch", "delete"}

func (ref *reference) page() pageData {
	d := ref.doc
	pd := pageData{Title: d.Info.Title, Version: d.Info.Version, Description: prose(d.Info.Description), Codes: d.ErrorCodes}
	for _, t := range d.Tags {
		tag := pageTag{Name: t.Name, Description: prose(t.Description)}
		for _, path := range sortedKeys(d.Paths) {
			for _, method := range methodOrder {
				op, ok := d.Paths[path][method]
				if !ok || !slices.Contains(op.Tags, t.Name) {
					continue
				}
				pr := pageRoute{Method: strings.ToUpper(method), Path: path, Summary: op.Summary, Description: prose(op.Description),
					Anchor: op.Tags[0] + "-" + strings.Trim(strings.NewReplacer("/", "-", "{", "", "}", "", ".", "-").Replace(path), "-"),
					Public: op.Security != nil && len(*op.Security) == 0}
				for _, p := range op.Parameters {
					if p.Ref != "" {
						p = d.Components.Parameters[refName(p.Ref)]
					}
					pr.Params = append(pr.Params, pageParam{Name: p.Name, In: p.In, Description: p.Description, Enum: strings.Join(p.Schema.Enum, ", ")})
				}
				if c, ok := op.RequestBody.Content["application/json"]; ok {
					pr.Body = schemaType(c.Schema)
					pr.Examples = examples(c.Examples)
				}
				for _, status := range sortedKeys(op.Responses) {
					r := op.Responses[status]
					resp := pageResponse{Status: status, Description: r.Description}
					if r.Ref != "" {
						resp.Description = refName(r.Ref) + ": see the error codes"
						if refName(r.Ref) == "Retryable" {
							resp.Description += "; may be retried after Retry-After seconds"
						}
					}
					if c, ok := r.Content["application/json"]; ok {
						resp.Examples = examples(c.Examples)
					}
					pr.Responses = append(pr.Responses, resp)
				}
				tag.Routes = append(tag.Routes, pr)
			}
		}
		pd.Tags = append(pd.Tags, tag)
	}
	for _, name := range sortedKeys(d.Components.Schemas) {
		s := d.Components.Schemas[name]
		ps := pageSchema{Name: name, Description: s.Description, Fields: fields("", s)}
		if len(ps.Fields) == 0 {
			ps.Fields = append(ps.Fields, pageField{Name: "", Type: schemaType(s)})
		}
		pd.Schemas = append(pd.Schemas, ps)
	}
	return pd
}

// fields lists s's properties, those of nested objects as parent.field.
func fields(parent string, s docSchema) []pageField {
	var out []pageField
	for _, f := range sortedKeys(s.Properties) {
		p := s.Properties[f]
		typ := schemaType(p)
		if slices.Contains(s.Required, f) {
			typ += ", required"
		}
		out = append(out, pageField{Name: parent + f, Type: typ, Description: p.Description})
		out = append(out, fields(parent+f+".", p)...)
	}
	return out
}

var pageTemplate = template.Must(template.New("reference").Funcs(template.FuncMap{
	"join": func(st []int) string {
		var s []string
		for _, n := range st {
			s = append(s, fmt.Sprint(n))
		}
		return strings.Join(s, ", ")
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} — reference</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace;background:#f4f4f4;padding:.1rem .3rem;border-radius:3px}
pre{padding:.5rem;overflow-x:auto;white-space:pre-wrap}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
.schema td:first-child{width:14rem}.schema td:nth-child(2){width:16rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
.route{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.method{font-weight:bold;color:#fff;background:#1565c0;padding:.1rem .4rem;border-radius:3px;font-size:13px}
.get{background:#2e7d32}.public{color:#666;font-size:13px}
nav a{margin-right:1rem}
</style></head><body>
<h1>{{.Title}} <small>v{{.Version}}</small></h1>
<nav><a href="#routes">Routes</a><a href="#errors">Error codes</a><a href="#schemas">Schemas</a><a href="/openapi.yaml">openapi.yaml</a><a href="/openapi.json">openapi.json</a></nav>
{{.Description}}
<h2 id="routes">Routes</h2>
<table><tr><th>Route</th><th>What</th></tr>
{{range .Tags}}{{range .Routes}}<tr><td><a href="#{{.Anchor}}"><code>{{.Method}} {{.Path}}</code></a></td><td>{{.Summary}}</td></tr>
{{end}}{{end}}</table>
{{range .Tags}}<h3>{{.Name}}</h3>{{.Description}}
{{range .Routes}}<div class="route" id="{{.Anchor}}">
<h4><span class="method{{if eq .Method "GET"}} get{{end}}">{{.Method}}</span> <code>{{.Path}}</code> — {{.Summary}}{{if .Public}} <span class="public">(no key)</span>{{end}}</h4>
{{.Description}}
{{if .Params}}<table><tr><th>Parameter</th><th>In</th><th>Meaning</th></tr>
{{range .Params}}<tr><td><code>{{.Name}}</code></td><td>{{.In}}</td><td>{{.Description}}{{if .Enum}} One of: <code>{{.Enum}}</code>.{{end}}</td></tr>
{{end}}</table>{{end}}
{{if .Body}}<p>Body: <a href="#schema-{{.Body}}">{{.Body}}</a></p>{{range .Examples}}<p>Example ({{.Name}}):</p><pre>{{.JSON}}</pre>{{end}}{{end}}
<table><tr><th>Status</th><th>Answer</th></tr>
{{range .Responses}}<tr><td>{{.Status}}</td><td>{{.Description}}{{range .Examples}}<br>{{.Name}}: <code>{{.JSON}}</code>{{end}}</td></tr>
{{end}}</table>
</div>
{{end}}{{end}}
<h2 id="errors">Error codes</h2>
<p>Every error answer is <code>{"error": {"code": "...", "message": "..."}}</code>. Codes from the runtime are the model runtime's own refusals, which the v2 infer route relays as they are (the task API answers <code>model_rejected_input</code> for them).</p>
<table><tr><th>Code</th><th>Status</th><th>From</th><th>Retry</th><th>Meaning</th></tr>
{{range .Codes}}<tr id="code-{{.Code}}-{{.Source}}"><td><code>{{.Code}}</code></td><td>{{join .Status}}</td><td>{{.Source}}</td><td>{{if .Retry}}after Retry-After{{end}}</td><td>{{.Meaning}}</td></tr>
{{end}}</table>
<h2 id="schemas">Schemas</h2>
{{range .Schemas}}<h4 id="schema-{{.Name}}">{{.Name}}</h4>{{if .Description}}<p>{{.Description}}</p>{{end}}
<table class="schema">{{range .Fields}}<tr><td>{{if .Name}}<code>{{.Name}}</code>{{end}}</td><td>{{.Type}}</td><td>{{.Description}}</td></tr>{{end}}</table>
{{end}}
</body></html>
`))
