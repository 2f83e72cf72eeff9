package scheduler

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// Issue 17 item 7 on the real engine (API 1.41): a model service the
// reconciler creates from a deployment without a CPU figure runs its
// container read-only, without capabilities, as nobody, with a 512 pids
// limit, a 2-CPU limit, rotated json-file logs and a 64 MiB tmpfs at /tmp,
// and the artifact volume Docker created for it is nobody's, so the runtime
// can still write its cache. The process itself is read from /proc: no
// effective capability, uid 65534, a read-only root mount.
func TestReconcileModelServiceLeastPrivilege(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm test in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newSwarmFixture(ctx, t, "lp")
	f.exec(`INSERT INTO models (name, task) VALUES ($1, 'text-classification')`, f.model)
	f.exec(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) SELECT id, 1, 'sha256:`+strings.Repeat("c", 64)+`', 1000, 'text-classification' FROM models WHERE name = $1`, f.model)
	f.exec(`INSERT INTO deployments (model_id, version, replicas, memory_bytes, memory_reservation_bytes) SELECT id, 1, 1, 268435456, 134217728 FROM models WHERE name = $1`, f.model)
	rec := &Reconciler{DB: f.db.Pool, Docker: f.cl, Log: slog.New(slog.DiscardHandler), Spec: f.spec}
	ctr := runningContainer(ctx, t, rec, f.cl, f.svc)

	hc := ctr.HostConfig
	if !hc.ReadonlyRootfs {
		t.Error("root filesystem is writable")
	}
	if len(hc.CapDrop) != 1 || strings.ToUpper(hc.CapDrop[0]) != "ALL" {
		t.Errorf("CapDrop %v", hc.CapDrop)
	}
	if hc.PidsLimit == nil || *hc.PidsLimit != PidsLimit {
		t.Errorf("PidsLimit %v", hc.PidsLimit)
	}
	if hc.NanoCPUs != DefaultNanoCPUs {
		t.Errorf("NanoCPUs %d, want the default %d", hc.NanoCPUs, int64(DefaultNanoCPUs))
	}
	if hc.LogConfig.Type != "json-file" || hc.LogConfig.Config["max-size"] != "10m" || hc.LogConfig.Config["max-file"] != "3" {
		t.Errorf("LogConfig %+v", hc.LogConfig)
	}
	if ctr.Config.User != RuntimeUser {
		t.Errorf("user %q", ctr.Config.User)
	}
	var tmpfs bool
	for _, m := range hc.Mounts {
		if m.Type == mount.TypeTmpfs && m.Target == TmpDir && m.TmpfsOptions != nil && m.TmpfsOptions.SizeBytes == TmpSizeBytes {
			tmpfs = true
		}
	}
	if !tmpfs {
		t.Errorf("no 64 MiB tmpfs at /tmp: %+v", hc.Mounts)
	}
	for _, m := range ctr.Mounts {
		if m.Type != mount.TypeVolume || m.Destination != ArtifactCacheDir {
			continue
		}
		if !m.RW {
			t.Error("artifact cache mounted read-only")
		}
		st, err := os.Stat(m.Source)
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 65534 || sys.Gid != 65534 {
			t.Errorf("artifact volume %s owned by %d:%d: nobody cannot write the cache", m.Source, sys.Uid, sys.Gid)
		}
	}

	// The process as the kernel sees it (the test shares the host's /proc).
	pid := ctr.State.Pid
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Skipf("cannot read the container's process from this host: %v", err)
	}
	for _, want := range []string{"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "Uid:\t65534\t65534\t65534\t65534"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("process status lacks %q:\n%s", want, status)
		}
	}
	mi, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var rootRO, tmpOK bool
	for _, line := range strings.Split(string(mi), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 {
			continue
		}
		opts := "," + fields[5] + ","
		switch fields[4] {
		case "/":
			rootRO = strings.Contains(opts, ",ro,")
		case "/tmp":
			// mountinfo prints no mode= when it is tmpfs's default 1777
			tmpOK = strings.Contains(line, " tmpfs ") && strings.Contains(line, "size=65536k")
		}
	}
	if !rootRO || !tmpOK {
		t.Errorf("root read-only %v, /tmp a 64 MiB tmpfs %v:\n%s", rootRO, tmpOK, mi)
	}
	if st, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/root/tmp"); err != nil {
		t.Error(err)
	} else if st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Errorf("/tmp mode %v, want sticky and 777", st.Mode())
	}
}

// runningContainer passes rec until svc has a running container and returns
// its inspection (the stand-in server of the fixture runs in it).
func runningContainer(ctx context.Context, t *testing.T, rec *Reconciler, cl *client.Client, svc string) container.InspectResponse {
	t.Helper()
	for {
		if _, err := rec.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		list, err := cl.ContainerList(ctx, client.ContainerListOptions{
			Filters: client.Filters{}.Add("label", "com.docker.swarm.service.name="+svc).Add("status", "running")})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) > 0 {
			insp, err := cl.ContainerInspect(ctx, list.Items[0].ID, client.ContainerInspectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return insp.Container
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never ran a container", svc)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
