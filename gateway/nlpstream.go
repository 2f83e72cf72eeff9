package gateway

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/customerapi"
)

// nlpStream turns the replica's OpenAI event stream (completions for
// generation, chat completions for chatbot) into the NLP Cloud route's:
// each content event becomes one event with the next piece of the answer
// (customerapi.GenerationChunk, ChatbotChunk), and the stream's end the
// whole answer, exactly the JSON a request without "stream" gets, then
// "data: [DONE]". The replica's usage event (asked for by streamable) is
// read for the token count and not passed on; an error event from the
// replica becomes the customer API's error shape. One per request: it
// keeps the answer's text so far for the final event.
type nlpStream struct {
	generation *customerapi.GenerationRequest // one of the two
	chatbot    *customerapi.ChatbotRequest
	text       strings.Builder // the pieces so far
	done       bool            // the whole answer and [DONE] sent
}

// maxStreamedAnswer bounds the text an nlpStream keeps for its final
// event. A longer answer still streams whole; its final event then carries
// the first maxStreamedAnswer bytes (a replica's context bounds an answer
// long before this).
const maxStreamedAnswer = 8 << 20

// streamable is replicaCall for the NLP Cloud routes: with nlp (the
// customer asked for "stream"), the replica is asked for a stream with
// its usage event, and the answer relayed through nlp.
func streamable(nlp *nlpStream, up map[string]any, path string, answer func(body []byte, u tokenUsage) ([]byte, error)) (genCall, error) {
	if nlp != nil {
		up["stream_options"] = map[string]bool{"include_usage": true}
	}
	call, err := replicaCall(path, up, answer)
	call.stream, call.nlp = nlp != nil, nlp
	return call, err
}

// scan appends the route's events for b's complete events (or an
// unfinished tail) to out, reading usage into u and counting content
// events in events.
func (s *nlpStream) scan(out, b []byte, u *tokenUsage, events *int64) []byte {
	for len(b) > 0 {
		ev := b
		if i := eventsEnd1(b); i > 0 {
			ev = b[:i]
		}
		b = b[len(ev):]
		data := bytes.TrimSpace(eventData(ev))
		if len(data) == 0 || s.done { // a comment or keep-alive; anything after [DONE]
			continue
		}
		if bytes.Equal(data, []byte("[DONE]")) {
			out = s.finish(out, estimate(*u, *events))
			continue
		}
		var d struct {
			Choices []struct {
				Text  string `json:"text"`
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *customerapi.Usage `json:"usage"`
			Error json.RawMessage    `json:"error"`
		}
		if json.Unmarshal(data, &d) != nil {
			continue // not an event of OpenAI's shape: nothing to pass on
		}
		if len(d.Error) > 0 && !bytes.Equal(d.Error, []byte("null")) {
			ev, _ := json.Marshal(apierror.New("upstream_error", "the model runtime failed during the generation"))
			out = appendEvent(out, ev)
			s.done = true // the replica ends its stream here
			continue
		}
		if d.Usage != nil {
			u.in, u.out, u.known = max(d.Usage.PromptTokens, 0), max(d.Usage.CompletionTokens, 0), true
		}
		if len(d.Choices) == 0 {
			continue
		}
		piece := d.Choices[0].Text + d.Choices[0].Delta.Content
		if piece == "" {
			continue // a role or finish event: nothing of the answer
		}
		*events++
		if s.text.Len() < maxStreamedAnswer {
			s.text.WriteString(piece[:min(len(piece), maxStreamedAnswer-s.text.Len())])
		}
		var chunk any = customerapi.GenerationChunk{GeneratedText: piece}
		if s.chatbot != nil {
			chunk = customerapi.ChatbotChunk{Response: piece}
		}
		cb, _ := json.Marshal(chunk)
		out = appendEvent(out, cb)
	}
	return out
}

// finish appends the whole answer as the last event, then [DONE]; once.
func (s *nlpStream) finish(out []byte, u tokenUsage) []byte {
	if s.done {
		return out
	}
	s.done = true
	var whole any
	if s.chatbot != nil {
		resp := s.text.String()
		whole = customerapi.ChatbotAnswer{Response: resp, History: append(slices.Clip(s.chatbot.History), customerapi.Exchange{Input: s.chatbot.Input, Response: resp})}
	} else {
		text := s.text.String()
		if !s.generation.RemoveInput {
			text = s.generation.Text + text
		}
		whole = customerapi.GenerationAnswer{GeneratedText: text, NbGeneratedTokens: u.out, NbInputTokens: u.in}
	}
	wb, _ := json.Marshal(whole)
	return append(appendEvent(out, wb), "data: [DONE]\n\n"...)
}

// appendEvent appends one Server-Sent Event of data (JSON: one line).
func appendEvent(out, data []byte) []byte {
	out = append(out, "data: "...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}
