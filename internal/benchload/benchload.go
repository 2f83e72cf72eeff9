package benchload

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Run runs clients loops for d, each sending newRequest(client, i) with
// client, reading the answer to the end (so the connection is reused) and
// sleeping pause; it returns every answer's latency. The first answer
// other than 200, or transport error, ends its loop and is returned.
func Run(client *http.Client, clients int, pause, d time.Duration, newRequest func(client, i int) *http.Request) ([]time.Duration, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var first error
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for c := range clients {
		wg.Go(func() {
			for i := 0; time.Now().Before(end); i++ {
				t0 := time.Now()
				resp, err := client.Do(newRequest(c, i))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("client %d request %d: status %d", c, i, resp.StatusCode)
					}
				}
				took := time.Since(t0)
				mu.Lock()
				if err != nil {
					first = cmp.Or(first, err)
					mu.Unlock()
					return
				}
				lat = append(lat, took)
				mu.Unlock()
				time.Sleep(pause)
			}
		})
	}
	wg.Wait()
	return lat, first
}

// Quantile is the q-quantile (0 to 1) of ds, 0 for none; ds is left as it
// is.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
