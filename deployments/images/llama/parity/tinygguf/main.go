// Command tinygguf writes ggufgen's TinyLlama(seed) to a file: the model
// the parity reference (reference.py, run by run.sh) loads into
// transformers. The image test builds the same bytes in memory and checks
// them against the fixture's sha256.
//
//	go run ./deployments/images/llama/parity/tinygguf -seed 1 -o model.gguf
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

func main() {
	seed := flag.Uint64("seed", 1, "TinyLlama's seed")
	out := flag.String("o", "model.gguf", "file to write")
	flag.Parse()
	if err := os.WriteFile(*out, ggufgen.TinyLlama(*seed).Build(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "tinygguf:", err)
		os.Exit(1)
	}
}
