package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
)

// The cgroup files that hold a container's memory limit: v2's memory.max
// ("max" when unlimited) and v1's memory.limit_in_bytes (a huge number when
// unlimited).
const (
	CgroupV2MemoryMax = "/sys/fs/cgroup/memory.max"
	CgroupV1MemoryMax = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
)

// cgroupV1Unlimited: v1 reports no limit as a page-rounded MaxInt64; any
// figure this large means none.
const cgroupV1Unlimited = 1 << 60

// CgroupMemoryLimit reads the container's memory limit from the first of
// paths that exists; ok is false when none does or it says unlimited.
func CgroupMemoryLimit(paths ...string) (limit int64, ok bool, err error) {
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("cgroup memory limit: %w", err)
		}
		b, err := io.ReadAll(io.LimitReader(f, 64))
		f.Close()
		if err != nil {
			return 0, false, fmt.Errorf("cgroup memory limit: read %s: %w", p, err)
		}
		return parseCgroupLimit(b)
	}
	return 0, false, nil
}

// parseCgroupLimit reads one memory.max / memory.limit_in_bytes figure.
func parseCgroupLimit(b []byte) (int64, bool, error) {
	s := string(bytes.TrimSpace(b))
	if s == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, false, fmt.Errorf("cgroup memory limit: %q is not a byte count", s)
	}
	if n >= cgroupV1Unlimited {
		return 0, false, nil
	}
	return n, true, nil
}

// MemoryLimit is the Go runtime's soft memory limit for a process: set
// (bytes, >0) as it is, else percent of the cgroup limit found at paths;
// ok is false when there is none to set.
func MemoryLimit(set int64, percent int, paths ...string) (int64, bool, error) {
	if set > 0 {
		return set, true, nil
	}
	lim, ok, err := CgroupMemoryLimit(paths...)
	if !ok || err != nil {
		return 0, false, err
	}
	if percent <= 0 || percent > 100 {
		percent = 80
	}
	return int64(math.Round(float64(lim) * float64(percent) / 100)), true, nil
}
