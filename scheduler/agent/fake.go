package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// FakeGPUsFile is a GPU source for machines without GPUs (tests, the
// multi-node lab of internal/swarmlab): it reports the inventory in a JSON
// file of the shape of shared/fixtures/nvml-h100.json, read again on every
// report. Where the file does not exist it falls back to Fallback (NVML), so
// one templated path (…/{{.Node.Hostname}}.json) can give fake GPUs to some
// nodes of a global service and not to others.
type FakeGPUsFile struct {
	Path     string
	Fallback Source
}

// Read implements Source.
func (f *FakeGPUsFile) Read() (Inventory, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		if f.Fallback == nil {
			return Inventory{}, ErrNoNVML
		}
		return f.Fallback.Read()
	}
	if err != nil {
		return Inventory{}, fmt.Errorf("fake GPUs: %w", err)
	}
	var inv Inventory
	if err := json.Unmarshal(b, &inv); err != nil {
		return Inventory{}, fmt.Errorf("fake GPUs: %s: %w", f.Path, err)
	}
	return inv, nil
}
