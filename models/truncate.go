package models

// Texts are cut by characters before tokenizing: the tokenizer encodes a
// text whole before truncating it to the model's positions, so one 16 KB
// text cost as much tokenizing as hundreds of ordinary ones (a query of
// death for the replica's one inference loop). A model sees at most
// max_position_embeddings tokens; charsPerToken characters per token is far
// above what tokenizers make of text (about 4–5 for English wordpieces), so
// the cut never reaches the tokens the model keeps, and outputs, offsets
// included, are unchanged (TestTruncateKeepsOutputs).
const charsPerToken = 16

// truncateChars cuts s after n characters (runes).
func truncateChars(s string, n int) string {
	if n <= 0 || len(s) <= n {
		return s
	}
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}

// truncateTexts cuts each text to what maxPositions tokens can come from;
// texts is not modified.
func truncateTexts(texts []string, maxPositions int) []string {
	if maxPositions <= 0 {
		return texts
	}
	n := maxPositions * charsPerToken
	var out []string
	for i, t := range texts {
		if c := truncateChars(t, n); len(c) != len(t) {
			if out == nil {
				out = append([]string(nil), texts...)
			}
			out[i] = c
		}
	}
	if out == nil {
		return texts
	}
	return out
}
