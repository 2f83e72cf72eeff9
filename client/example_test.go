package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nlpswarm/nlpswarm/client"
)

// A tour of the client: a sentiment, a batch of entities, an embedding, and
// an error with its code. (gatewayURL and apiKey are the test gateway's
// here: use yours.)
func Example() {
	gatewayURL, apiKey := shared.URL, shared.Key
	c, err := client.New(gatewayURL, apiKey)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := c.Sentiment(ctx, "sentiment", "i love this movie")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sentiment:", s.ScoredLabels[0].Label, s.ScoredLabels[0].Score)

	ents, err := client.RunBatch(ctx, c, "ner", client.Entities, []string{"Alice flew home", "Bob stayed"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range ents {
		fmt.Printf("entity: %s %s [%d:%d]\n", a.Entities[0].Text, a.Entities[0].Type, a.Entities[0].Start, a.Entities[0].End)
	}

	e, err := c.Embed(ctx, "embed", "abc")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("embedding:", e.Embeddings[0])

	_, err = c.Entities(ctx, "sentiment", "i love this movie")
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		fmt.Println("error:", apiErr.Status, apiErr.Code)
	}
	// Output:
	// sentiment: POSITIVE 0.9
	// entity: Alice PER [0:5]
	// entity: Bob PER [0:3]
	// embedding: [0.1 0.2 3]
	// error: 400 task_not_supported
}
