package gateway

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// Shadow agreement (issue 20): a shadow version's answer against the
// stable version's, output by output (one per text). Two outputs agree
// when they would tell the customer the same thing:
//
//   - text-classification: the same top label (the highest score);
//   - token-classification: the same entities, each its type (entity_group,
//     or entity without aggregation) and character span, in any order;
//   - feature-extraction: embeddings at a cosine similarity of at least
//     agreeCosine.
//
// Compared are the replicas' own answers on the routes whose answers have
// outputs of those kinds: the task API's /predict and the embeddings of a
// GGUF (OpenAI's /v1/embeddings). The v2 infer route's tensors and
// generated text are not compared (their shadow copies still count for
// requests, errors and latency).

// agreeCosine is the least cosine similarity of two embeddings that agree.
const agreeCosine = 0.99

// agreement compares the answers of a request on path to a model of task:
// n outputs compared, of which agreed. n is 0 when the request's answers
// are not compared, or the stable answer is not one (nothing to compare
// with); a shadow answer of another shape or output count disagrees
// wholly.
func agreement(task string, gguf bool, path string, stable, shadow []byte) (n, agreed int64) {
	var a, b []output
	var ok bool
	switch {
	case path == runtimeapi.PathPredict && !gguf:
		if a, ok = predictOutputs(task, stable); !ok {
			return 0, 0
		}
		b, ok = predictOutputs(task, shadow)
	case path == customerapi.PathEmbeddings && gguf:
		if a, ok = openAIEmbeddings(stable); !ok {
			return 0, 0
		}
		b, ok = openAIEmbeddings(shadow)
	default:
		return 0, 0
	}
	n = int64(len(a))
	if !ok || len(b) != len(a) {
		return n, 0
	}
	for i := range a {
		if a[i].agrees(&b[i]) {
			agreed++
		}
	}
	return n, agreed
}

// output is one output reduced to what agreement compares.
type output struct {
	label     string   // text-classification: the top label
	entities  []string // token-classification: "type\x00start\x00end", sorted
	embedding []float64
	kind      byte // 'l', 'e' or 'v'
}

func (o *output) agrees(p *output) bool {
	if o.kind != p.kind {
		return false
	}
	switch o.kind {
	case 'l':
		return o.label == p.label
	case 'e':
		return slices.Equal(o.entities, p.entities)
	}
	return cosine(o.embedding, p.embedding) >= agreeCosine
}

// cosine is the cosine similarity of a and b; 0 when their lengths differ
// or one is all zero.
func cosine(a, b []float64) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	var dot, na, nb float64
	for i := range a {
		dot += a[i] * b[i]
		na += a[i] * a[i]
		nb += b[i] * b[i]
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / (math.Sqrt(na) * math.Sqrt(nb))
}

// predictOutputs reads a /predict answer of task.
func predictOutputs(task string, body []byte) ([]output, bool) {
	switch task {
	case runtimeapi.TextClassification:
		var rr struct {
			Outputs [][]runtimeapi.Label `json:"outputs"`
		}
		if decodeReplicaJSON(body, &rr) != nil {
			return nil, false
		}
		out := make([]output, len(rr.Outputs))
		for i, ls := range rr.Outputs {
			out[i].kind = 'l'
			best := math.Inf(-1)
			for _, l := range ls {
				if l.Score > best {
					best, out[i].label = l.Score, l.Label
				}
			}
		}
		return out, true
	case runtimeapi.TokenClassification:
		var rr struct {
			Outputs [][]runtimeapi.Entity `json:"outputs"`
		}
		if decodeReplicaJSON(body, &rr) != nil {
			return nil, false
		}
		out := make([]output, len(rr.Outputs))
		var sb strings.Builder
		for i, es := range rr.Outputs {
			out[i].kind = 'e'
			out[i].entities = make([]string, 0, len(es))
			for _, e := range es {
				typ := e.EntityGroup
				if typ == "" {
					typ = e.Entity
				}
				sb.Reset()
				sb.WriteString(typ)
				sb.WriteByte(0)
				sb.WriteString(strconv.Itoa(e.Start))
				sb.WriteByte(0)
				sb.WriteString(strconv.Itoa(e.End))
				out[i].entities = append(out[i].entities, sb.String())
			}
			slices.Sort(out[i].entities)
		}
		return out, true
	case runtimeapi.FeatureExtraction:
		var rr struct {
			Outputs []runtimeapi.EmbeddingOf[float64] `json:"outputs"`
		}
		if decodeReplicaJSON(body, &rr) != nil {
			return nil, false
		}
		out := make([]output, len(rr.Outputs))
		for i, e := range rr.Outputs {
			out[i] = output{kind: 'v', embedding: e.Embedding}
		}
		return out, true
	}
	return nil, false
}

// openAIEmbeddings reads an OpenAI embeddings answer: data[i].embedding,
// placed by its index.
func openAIEmbeddings(body []byte) ([]output, bool) {
	var a struct {
		Data []struct {
			Index     *int      `json:"index"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	if decodeReplicaJSON(body, &a) != nil {
		return nil, false
	}
	out := make([]output, len(a.Data))
	for i, d := range a.Data {
		at := i
		if d.Index != nil {
			at = *d.Index
		}
		if at < 0 || at >= len(out) || out[at].kind != 0 {
			return nil, false
		}
		out[at] = output{kind: 'v', embedding: d.Embedding}
	}
	return out, true
}
