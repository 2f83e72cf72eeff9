package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// The task API's JSON on the hot path. Each request decodes the customer's
// body, encodes the runtime request, decodes the runtime's answer and
// encodes the customer's answer; with reflection-based encoders that was
// the largest part of the gateway's own CPU (BENCHMARKS.md). The usual
// shapes are read and written here by hand:
//
//   - decodeSimple takes {"text": "..."} and {"texts": [...]} with plain
//     strings and leaves everything else (escapes, parameters, odd keys,
//     errors) to DecodeRequest's encoding/json path; FuzzDecodeSimple
//     checks that where it answers, encoding/json answers the same;
//   - the appenders write exactly what encoding/json's Encoder writes
//     (HTML-safe strings, its float format); TestAppendersMatchEncodingJSON
//     and FuzzAppendJSONString check byte equality.

// decodeSimple parses body when it is one JSON object with exactly one key,
// "text" (a string) or "texts" (an array of strings), every string free of
// escapes and control bytes. ok=false means "not this simple": the caller
// takes the general path, which also words every error.
func decodeSimple(body []byte) (texts []string, single, ok bool) {
	p := jsonScan{b: body}
	p.space()
	if !p.byte('{') {
		return nil, false, false
	}
	p.space()
	key, ok := p.plainString()
	if !ok {
		return nil, false, false
	}
	p.space()
	if !p.byte(':') {
		return nil, false, false
	}
	p.space()
	switch key {
	case "text":
		s, ok := p.plainString()
		if !ok {
			return nil, false, false
		}
		texts, single = []string{s}, true
	case "texts":
		if !p.byte('[') {
			return nil, false, false
		}
		p.space()
		if p.byte(']') { // an empty list: the general path words the error
			return nil, false, false
		}
		for {
			p.space()
			s, ok := p.plainString()
			if !ok {
				return nil, false, false
			}
			texts = append(texts, s)
			p.space()
			if p.byte(']') {
				break
			}
			if !p.byte(',') {
				return nil, false, false
			}
		}
	default:
		return nil, false, false
	}
	p.space()
	if !p.byte('}') {
		return nil, false, false
	}
	p.space()
	if p.i != len(p.b) {
		return nil, false, false
	}
	return texts, single, true
}

type jsonScan struct {
	b []byte
	i int
}

func (p *jsonScan) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScan) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// plainString reads a string with no escape, no control byte and valid
// UTF-8 (what encoding/json would read unchanged).
func (p *jsonScan) plainString() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return "", false
			}
			return string(s), true
		case c == '\\' || c < 0x20:
			return "", false
		}
		p.i++
	}
	return "", false
}

// appendRuntimeRequest writes {"texts":[...]} (parameters go through the
// general encoder, which also compacts them).
func appendRuntimeRequest(dst []byte, texts []string, params []byte) []byte {
	if len(params) > 0 {
		b, _ := gojson.Marshal(runtimeapi.PredictRequest{Texts: texts, Parameters: params})
		return append(dst, b...)
	}
	dst = append(dst, `{"texts":[`...)
	for i, t := range texts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, t)
	}
	return append(dst, "]}"...)
}

// appendAnswers writes the customer's answer as json.Encoder would: the one
// answer when single, else {"results": [...]}, and a newline.
func appendAnswers(dst []byte, answers []any, single bool) []byte {
	if single {
		return append(appendAnswer(dst, answers[0]), '\n')
	}
	dst = append(dst, `{"results":[`...)
	for i, a := range answers {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendAnswer(dst, a)
	}
	return append(dst, "]}\n"...)
}

// appendAnswer writes one customer answer (labelsAnswer, entitiesAnswer or
// embeddingsAnswer) as encoding/json would.
func appendAnswer(dst []byte, a any) []byte {
	switch a := a.(type) {
	case labelsAnswer:
		if a.ScoredLabels == nil {
			return append(dst, `{"scored_labels":null}`...)
		}
		dst = append(dst, `{"scored_labels":[`...)
		for i, l := range a.ScoredLabels {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"label":`...)
			dst = appendJSONString(dst, l.Label)
			dst = append(dst, `,"score":`...)
			dst = appendJSONFloat(dst, l.Score)
			dst = append(dst, '}')
		}
		return append(dst, "]}"...)
	case entitiesAnswer:
		if a.Entities == nil {
			return append(dst, `{"entities":null}`...)
		}
		dst = append(dst, `{"entities":[`...)
		for i, e := range a.Entities {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"text":`...)
			dst = appendJSONString(dst, e.Text)
			dst = append(dst, `,"type":`...)
			dst = appendJSONString(dst, e.Type)
			dst = append(dst, `,"start":`...)
			dst = strconv.AppendInt(dst, int64(e.Start), 10)
			dst = append(dst, `,"end":`...)
			dst = strconv.AppendInt(dst, int64(e.End), 10)
			dst = append(dst, `,"score":`...)
			dst = appendJSONFloat(dst, e.Score)
			dst = append(dst, '}')
		}
		return append(dst, "]}"...)
	case embeddingsAnswer:
		dst = append(dst, `{"embeddings":`...)
		if a.Embeddings == nil {
			return append(dst, "null}"...)
		}
		dst = append(dst, '[')
		for i, v := range a.Embeddings {
			if i > 0 {
				dst = append(dst, ',')
			}
			if v == nil {
				dst = append(dst, "null"...)
				continue
			}
			dst = append(dst, '[')
			for j, f := range v {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = appendJSONFloat(dst, f)
			}
			dst = append(dst, ']')
		}
		return append(dst, "]}"...)
	}
	b, _ := gojson.Marshal(a)
	return append(dst, b...)
}

// appendJSONFloat writes f as encoding/json writes a float64 (f finite:
// every score and vector here was decoded from JSON).
func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...) // cannot happen; never write invalid JSON
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' { // e-07 -> e-7, as encoding/json does
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s quoted as encoding/json's Encoder does by
// default: <, > and & escaped for HTML, U+2028 and U+2029 escaped, invalid
// UTF-8 as U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// decodeLabelsSimple parses a text-classification runtime's answer to
// /predict, {"model": "...", "task": "...", "outputs": [[{"label": "...",
// "score": n}, ...], ...]}, when it has just these keys, plain strings and
// JSON numbers. ok=false leaves it to the general decoder (translateAll);
// FuzzDecodeLabelsSimple checks that where it answers, encoding/json
// answers the same.
func decodeLabelsSimple(body []byte) (outputs [][]runtimeapi.Label, ok bool) {
	p := jsonScan{b: body}
	p.space()
	if !p.byte('{') {
		return nil, false
	}
	seen := false
	for {
		p.space()
		key, ok := p.plainString()
		if !ok {
			return nil, false
		}
		p.space()
		if !p.byte(':') {
			return nil, false
		}
		p.space()
		switch key {
		case "model", "task":
			if _, ok := p.plainString(); !ok {
				return nil, false
			}
		case "outputs":
			if seen {
				return nil, false
			}
			seen = true
			if outputs, ok = p.labelLists(); !ok {
				return nil, false
			}
		default:
			return nil, false
		}
		p.space()
		if p.byte('}') {
			break
		}
		if !p.byte(',') {
			return nil, false
		}
	}
	p.space()
	if !seen || p.i != len(p.b) {
		return nil, false
	}
	return outputs, true
}

// labelLists reads [[{"label": "...", "score": n}, ...], ...].
func (p *jsonScan) labelLists() ([][]runtimeapi.Label, bool) {
	if !p.byte('[') {
		return nil, false
	}
	out := [][]runtimeapi.Label{}
	p.space()
	if p.byte(']') {
		return out, true
	}
	for {
		p.space()
		if !p.byte('[') {
			return nil, false
		}
		list := []runtimeapi.Label{}
		p.space()
		if !p.byte(']') {
			for {
				p.space()
				l, ok := p.scoredLabel()
				if !ok {
					return nil, false
				}
				list = append(list, l)
				p.space()
				if p.byte(']') {
					break
				}
				if !p.byte(',') {
					return nil, false
				}
			}
		}
		out = append(out, list)
		p.space()
		if p.byte(']') {
			return out, true
		}
		if !p.byte(',') {
			return nil, false
		}
	}
}

// scoredLabel reads {"label": "...", "score": n}, its two keys once each.
func (p *jsonScan) scoredLabel() (l runtimeapi.Label, ok bool) {
	if !p.byte('{') {
		return l, false
	}
	var haveLabel, haveScore bool
	for i := 0; i < 2; i++ {
		if i > 0 && !p.byte(',') {
			return l, false
		}
		p.space()
		key, ok := p.plainString()
		if !ok {
			return l, false
		}
		p.space()
		if !p.byte(':') {
			return l, false
		}
		p.space()
		switch {
		case key == "label" && !haveLabel:
			if l.Label, ok = p.plainString(); !ok {
				return l, false
			}
			haveLabel = true
		case key == "score" && !haveScore:
			if l.Score, ok = p.number(); !ok {
				return l, false
			}
			haveScore = true
		default:
			return l, false
		}
		p.space()
	}
	return l, p.byte('}')
}

// number reads a JSON number (RFC 8259 grammar; strconv.ParseFloat alone
// would take more, like "0x1p3" or "Inf").
func (p *jsonScan) number() (float64, bool) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	p.byte('-')
	switch {
	case p.byte('0'):
	case digits() == 0:
		return 0, false
	}
	if p.byte('.') && digits() == 0 {
		return 0, false
	}
	if p.byte('e') || p.byte('E') {
		if !p.byte('+') {
			p.byte('-')
		}
		if digits() == 0 {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(string(p.b[start:p.i]), 64)
	return f, err == nil
}

// decodeReplicaJSON decodes a replica's answer with goccy/go-json, but only
// a body that encoding/json's scanner calls valid. goccy/go-json v0.10.5
// pools its decoding state, and some malformed bodies (an object key that
// ends in a dangling escape, `{"\00\`) leave that state pointing past the
// next body: a later Unmarshal panics with index out of range, or reads a
// previous answer's bytes (goccy/go-json issue 604, unfixed upstream;
// TestDecodeReplicaJSONMalformedSequence). A replica is outside the
// gateway's trust, so nothing malformed reaches goccy's decoder; the
// recover is the second line, turning a panic the check did not foresee
// into an error instead of a dropped connection or, on the fasthttp front
// end, a dead gateway.
func decodeReplicaJSON(body []byte, v any) (err error) {
	if !json.Valid(body) {
		return errReplicaJSON
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decoding a replica's answer: %v", p)
		}
	}()
	return gojson.Unmarshal(body, v)
}

var errReplicaJSON = errors.New("a replica's answer is not valid JSON")
