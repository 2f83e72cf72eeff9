package agent

import (
	"strings"
	"testing"
)

// The agent tells its pid namespace from /proc/self/status's NSpid line,
// and a reading with GPUs says which it is (what its processes' pids are).
func TestNestedPIDNamespace(t *testing.T) {
	for _, c := range []struct {
		name, status string
		nested, err  bool
	}{
		{"the host's", "Name:\tnlpswarm\nTgid:\t4242\nNSpid:\t4242\nPPid:\t1\n", false, false},
		{"a container's", "Name:\tnlpswarm\nNSpid:\t4242\t1\n", true, false},
		{"a container's in a container's", "NSpid:\t4242\t17\t1\n", true, false},
		{"no NSpid (before Linux 4.1)", "Name:\tnlpswarm\nPid:\t4242\n", false, true},
		{"an empty NSpid", "NSpid:\n", false, true},
	} {
		nested, err := NestedPIDNamespace(c.status)
		if nested != c.nested || (err != nil) != c.err {
			t.Errorf("%s: %v, %v; want %v, error %v", c.name, nested, err, c.nested, c.err)
		}
	}
}

func TestReadSaysPIDNamespace(t *testing.T) {
	defer func(f func() (string, error)) { selfStatus = f }(selfStatus)
	src := staticSource{Inventory{GPUs: []GPU{{UUID: "GPU-1", Processes: []Process{{PID: 7, Memory: 1 << 30}}}}}}
	for _, c := range []struct {
		status, ns string
		note       bool
	}{
		{"NSpid:\t4242\n", PIDNamespaceHost, false},
		{"NSpid:\t4242\t1\n", PIDNamespaceContainer, true},
		{"Pid:\t1\n", "", false},
	} {
		selfStatus = func() (string, error) { return c.status, nil }
		inv, err := Read(src)
		if err != nil || inv.PIDNamespace != c.ns || (inv.ProcessNote != "") != c.note {
			t.Errorf("%q: %q %q %v; want %q, note %v", c.status, inv.PIDNamespace, inv.ProcessNote, err, c.ns, c.note)
		}
		if c.note && !strings.Contains(inv.ProcessNote, "--pid=host") {
			t.Errorf("the note does not say the way around it: %s", inv.ProcessNote)
		}
	}
	// no GPU, no namespace: there are no processes to speak of
	inv, _ := Read(staticSource{Inventory{}})
	if inv.PIDNamespace != "" || inv.ProcessNote != "" {
		t.Errorf("no GPU: %+v", inv)
	}
}

type staticSource struct{ inv Inventory }

func (s staticSource) Read() (Inventory, error) { return s.inv, nil }
