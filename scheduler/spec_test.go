package scheduler

import (
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/mount"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestBuildSpecGolden(t *testing.T) {
	cfg := SpecConfig{Image: "sha256:" + "ab" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd", Network: "nlpswarm",
		ArtifactBaseURL: "http://apiserver:8081/", ArtifactKey: artifactcred.Key("internal-test-token"), CallKey: testCallKey(t),
		Now:                 func() time.Time { return time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC) },
		PlacementConstraint: "node.labels.type==machine-learning",
		LlamaImage:          "sha256:" + "11" + strings.Repeat("0", 62), LlamaCUDAImage: "sha256:" + "22" + strings.Repeat("0", 62)}
	tests := []struct {
		name string
		d    Desired
	}{
		{"cpu", Desired{Desired: deployment.Desired{Model: "sentiment", Task: "text-classification", Version: 3, Digest: "sha256:feed", Replicas: 2,
			Resources: deployment.Resources{CPUs: 1, MemoryReservation: 300 << 20, Labels: map[string]string{"zone": "eu", "disk": "ssd"}}}, MaxPerNode: 1}},
		{"gpu", Desired{Desired: deployment.Desired{Model: "big", Task: "feature-extraction", Version: 1, Digest: "sha256:beef", Replicas: 1,
			Resources: deployment.Resources{MemoryBytes: 8 << 30, MemoryReservation: 4 << 30, GPUs: 1, GPUMemory: 16 << 30}}, Pin: &Pin{NodeID: "node-7", GPUUUIDs: []string{"GPU-6dbd0f63-4ff1-3c08-35c4-b39b76c99a0c"}}}},
		// issue 15: a text-generation model on CPUs (its estimate reserved)
		// and on a GPU (the CUDA image, every layer offloaded)
		{"generation_cpu", Desired{Desired: deployment.Desired{Model: "chat", Task: "text-generation", Version: 2, Digest: "sha256:cafe", Replicas: 2,
			Resources: deployment.Resources{CPUs: 4, MemoryReservation: 5 << 30}}, MaxPerNode: 1}},
		{"generation_gpu", Desired{Desired: deployment.Desired{Model: "chat", Task: "text-generation", Version: 2, Digest: "sha256:cafe", Replicas: 1,
			Resources: deployment.Resources{MemoryReservation: 4 << 30, GPUs: 1, GPUMemory: 5 << 30}}, Pin: &Pin{Slot: 1, NodeID: "node-7", GPUUUIDs: []string{"GPU-6dbd0f63-4ff1-3c08-35c4-b39b76c99a0c"}}}},
		// issue 15: an embedding GGUF (feature-extraction) on CPUs: the
		// generation runtime in its embeddings mode
		{"generation_embeddings", Desired{Desired: deployment.Desired{Model: "embed", Task: "feature-extraction", Format: deployment.FormatGGUF, Version: 1,
			Digest: "sha256:e11b", Replicas: 1, Resources: deployment.Resources{CPUs: 2, MemoryReservation: 300 << 20}}, MaxPerNode: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := BuildSpec(tt.d, cfg)
			got, _ := json.MarshalIndent(spec, "", "  ")
			path := filepath.Join("testdata", "spec_"+tt.name+".golden.json")
			if *update {
				os.WriteFile(path, append(got, '\n'), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./scheduler -run Golden -update)", err)
			}
			if string(want) != string(got)+"\n" {
				t.Fatalf("spec differs from %s:\n%s", path, got)
			}
			if _, ok := spec.Labels["com.docker.stack.namespace"]; ok {
				t.Fatal("model services must not carry the stack namespace")
			}
			// scaling alone keeps the hash: a scale is not a rolling update
			d2 := tt.d
			d2.Replicas++
			if SpecHash(BuildSpec(d2, cfg)) != spec.Labels[LabelSpecHash] {
				t.Fatal("replica count changed the spec hash")
			}
			d2.Version++
			if BuildSpec(d2, cfg).Labels[LabelSpecHash] == spec.Labels[LabelSpecHash] {
				t.Fatal("a new version kept the spec hash")
			}
		})
	}
}

// Issue 14: the engine picks the image and the runtime's --engine.backend,
// and a change of engine changes the spec hash (a rolling update).
func TestBuildSpecEngine(t *testing.T) {
	goImg, ortImg := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	withORT := SpecConfig{Image: goImg, ORTImage: ortImg, Network: "n", ArtifactBaseURL: "http://a"}
	goOnly := SpecConfig{Image: goImg, Network: "n", ArtifactBaseURL: "http://a"}
	tests := []struct {
		name, asked string
		cfg         SpecConfig
		backend     string
		image       string
		err         string
	}{
		{"default with an ORT image: ort", "", withORT, "ort", ortImg, ""},
		{"default without: go", "", goOnly, "go", goImg, ""},
		{"go asked, ORT image present: go on the go image", "go", withORT, "go", goImg, ""},
		{"ort asked: the ORT image", "ort", withORT, "ort", ortImg, ""},
		{"ort asked without an ORT image: refused", "ort", goOnly, "", "", "no ONNX Runtime image"},
		{"an unknown engine: refused", "auto", withORT, "", "", "unknown backend"},
	}
	hashes := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng, err := tt.cfg.Engine(tt.asked)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Engine(%q) = %+v, %v; want an error with %q", tt.asked, eng, err, tt.err)
				}
				return
			}
			if err != nil || eng.Backend != tt.backend || eng.Image != tt.image {
				t.Fatalf("Engine(%q) = %+v, %v", tt.asked, eng, err)
			}
			d := Desired{Desired: deployment.Desired{Model: "m", Task: "text-classification", Version: 1, Digest: "sha256:feed", Replicas: 1, Backend: tt.asked}}
			spec := BuildSpec(d, tt.cfg)
			cs := spec.TaskTemplate.ContainerSpec
			if cs.Image != tt.image || !slices.Contains(cs.Args, "--engine.backend="+tt.backend) || spec.Labels[LabelBackend] != tt.backend {
				t.Fatalf("spec: image %s, args %v, label %q", cs.Image, cs.Args, spec.Labels[LabelBackend])
			}
			hashes[tt.backend+" "+tt.image] = spec.Labels[LabelSpecHash]
		})
	}
	// go on the go image, ort on the ORT image: two different specs
	if len(hashes) != 2 || hashes["go "+goImg] == hashes["ort "+ortImg] {
		t.Fatalf("spec hashes by engine: %v", hashes)
	}
}

// Issue 17 item 7: every model service runs with least privilege whatever
// the deployment asks for: a read-only root with a bounded tmpfs at /tmp,
// no capabilities, nobody as its user, a pids limit, a CPU limit (the
// default when the deployment sets none) and rotated logs.
func TestBuildSpecLeastPrivilege(t *testing.T) {
	cfg := SpecConfig{Image: "sha256:" + strings.Repeat("c", 64), Network: "nlpswarm", ArtifactBaseURL: "http://apiserver:8081"}
	base := deployment.Desired{Model: "m", Task: "text-classification", Version: 1, Digest: "sha256:feed", Replicas: 1}
	tests := []struct {
		name                  string
		cpus                  float64
		pin                   *Pin
		wantLimit, wantReserv int64
	}{
		{"no CPU figure gets the default limit", 0, nil, 2e9, 0},
		{"negative CPUs count as none", -1, nil, 2e9, 0},
		{"the deployment's CPUs win", 4, nil, 4e9, 1e9},
		{"a fraction", 0.5, nil, 5e8, 125e6},
		{"GPU pinned", 0, &Pin{NodeID: "n1", GPUUUIDs: []string{"GPU-1"}}, 2e9, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Desired{Desired: base, Pin: tt.pin}
			d.CPUs = tt.cpus
			s := BuildSpec(d, cfg)
			c := s.TaskTemplate.ContainerSpec
			if !c.ReadOnly {
				t.Error("root filesystem is writable")
			}
			if !slices.Equal(c.CapabilityDrop, []string{"ALL"}) || len(c.CapabilityAdd) != 0 {
				t.Errorf("capabilities: drop %v add %v", c.CapabilityDrop, c.CapabilityAdd)
			}
			if c.User != "65534:65534" || c.Privileges != nil {
				t.Errorf("user %q privileges %+v", c.User, c.Privileges)
			}
			var tmp, cache *mount.Mount
			for i, m := range c.Mounts {
				switch m.Target {
				case "/tmp":
					tmp = &c.Mounts[i]
				case ArtifactCacheDir:
					cache = &c.Mounts[i]
				default:
					t.Errorf("unexpected mount %+v", m)
				}
			}
			if tmp == nil || tmp.Type != mount.TypeTmpfs || tmp.TmpfsOptions == nil ||
				tmp.TmpfsOptions.SizeBytes != 64<<20 || tmp.TmpfsOptions.Mode != 0o1777 {
				t.Errorf("/tmp mount %+v", tmp)
			} else if tmp.TmpfsOptions.Mode&os.ModeSticky != 0 {
				t.Error("tmpfs mode uses Go's ModeSticky, which Docker would print as mode=4000777")
			}
			if cache == nil || cache.Type != mount.TypeVolume || cache.ReadOnly {
				t.Errorf("artifact cache must stay a writable volume: %+v", cache)
			}
			r := s.TaskTemplate.Resources
			if r.Limits.Pids != 512 {
				t.Errorf("pids limit %d", r.Limits.Pids)
			}
			if r.Limits.NanoCPUs != tt.wantLimit || r.Reservations.NanoCPUs != tt.wantReserv {
				t.Errorf("CPU limit %d reservation %d, want %d %d", r.Limits.NanoCPUs, r.Reservations.NanoCPUs, tt.wantLimit, tt.wantReserv)
			}
			ld := s.TaskTemplate.LogDriver
			if ld == nil || ld.Name != "json-file" || !maps.Equal(ld.Options, map[string]string{"max-size": "10m", "max-file": "3"}) {
				t.Errorf("log driver %+v", ld)
			}
		})
	}
}

// Issue 17 item 1: a model service gets a credential for its own digest and
// no secret; the credential (so the spec hash) is the same on every
// reconcile within an artifactcred.Period and is re-minted after one.
func TestBuildSpecArtifactCredential(t *testing.T) {
	key := artifactcred.Key("internal-test-token")
	digest := "sha256:" + strings.Repeat("d", 64)
	start := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	at := func(now time.Time) SpecConfig {
		return SpecConfig{Image: "sha256:" + strings.Repeat("c", 64), Network: "n", ArtifactBaseURL: "http://apiserver:9100",
			ArtifactKey: key, Now: func() time.Time { return now }}
	}
	d := Desired{Desired: deployment.Desired{Model: "m", Task: "text-classification", Version: 1, Digest: digest, Replicas: 1}}
	cred := func(s SpecConfig) string {
		spec := BuildSpec(d, s)
		if len(spec.TaskTemplate.ContainerSpec.Secrets) != 0 {
			t.Fatalf("model service gets secrets %v: runtimes must not hold the internal token", spec.TaskTemplate.ContainerSpec.Secrets)
		}
		for _, a := range spec.TaskTemplate.ContainerSpec.Args {
			if strings.Contains(a, "internaltoken") {
				t.Fatalf("arg %q: runtimes must not read the internal token", a)
			}
			if c, ok := strings.CutPrefix(a, "--artifactcredential="); ok {
				return c
			}
		}
		t.Fatal("no --artifactcredential in the runtime's args")
		return ""
	}
	first := cred(at(start))
	if err := artifactcred.Verify(key, first, digest, start); err != nil {
		t.Fatalf("minted credential refused: %v", err)
	}
	if err := artifactcred.Verify(key, first, "sha256:"+strings.Repeat("e", 64), start); err == nil {
		t.Fatal("the credential opens another digest")
	}
	hash := BuildSpec(d, at(start)).Labels[LabelSpecHash]
	rolls := 0
	for h := 1; h <= 24*14; h++ {
		now := start.Add(time.Duration(h) * time.Hour)
		c := cred(at(now))
		if err := artifactcred.Verify(key, c, digest, now.Add(artifactcred.Period-time.Second)); err != nil {
			t.Fatalf("at %s the spec's credential is not valid for one more Period: %v", now, err)
		}
		if hh := BuildSpec(d, at(now)).Labels[LabelSpecHash]; hh != hash {
			rolls++
			hash = hh
		}
	}
	if rolls < 1 || rolls > 2 {
		t.Fatalf("spec hash changed %d times in two weeks of hourly reconciles, want once a Period", rolls)
	}
	// no key: no credential, no secret (a scheduler without the token)
	noKey := at(start)
	noKey.ArtifactKey = nil
	for _, a := range BuildSpec(d, noKey).TaskTemplate.ContainerSpec.Args {
		if strings.HasPrefix(a, "--artifactcredential") {
			t.Fatalf("credential %q without a key", a)
		}
	}
}

func testCallKey(t *testing.T) []byte {
	t.Helper()
	k, err := artifactcred.CallKey("replica-call-secret-of-the-tests-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Issue 17: each model service requires its model's call credential on
// /predict; BuildSpec derives it from the call key for that model alone
// (every GPU slot's service of one model the same), and passes no secret.
func TestBuildSpecCallCredential(t *testing.T) {
	key := testCallKey(t)
	cfg := SpecConfig{Image: "sha256:" + strings.Repeat("c", 64), Network: "n", CallKey: key}
	cred := func(c SpecConfig, d Desired) string {
		t.Helper()
		spec := BuildSpec(d, c)
		if len(spec.TaskTemplate.ContainerSpec.Secrets) != 0 {
			t.Fatalf("model service gets secrets %v", spec.TaskTemplate.ContainerSpec.Secrets)
		}
		got := ""
		for _, a := range spec.TaskTemplate.ContainerSpec.Args {
			if strings.Contains(a, "secret") {
				t.Fatalf("arg %q: runtimes must not get the call secret", a)
			}
			if c, ok := strings.CutPrefix(a, "--callcredential="); ok {
				got = c
			}
		}
		return got
	}
	d := func(model string, pin *Pin) Desired {
		return Desired{Desired: deployment.Desired{Model: model, Task: "text-classification", Version: 1, Digest: "sha256:" + strings.Repeat("d", 64), Replicas: 1}, Pin: pin}
	}
	sentiment := cred(cfg, d("sentiment", nil))
	for _, c := range []struct {
		name string
		got  string
		want string
	}{
		{"the model's credential", sentiment, artifactcred.Call(key, "sentiment")},
		{"a GPU slot's service of the model", cred(cfg, d("sentiment", &Pin{Slot: 2, NodeID: "n1", GPUUUIDs: []string{"GPU-1"}})), sentiment},
		{"another model", cred(cfg, d("ner", nil)), artifactcred.Call(key, "ner")},
		{"no call key", cred(SpecConfig{Image: cfg.Image, Network: "n"}, d("sentiment", nil)), ""},
	} {
		if c.got != c.want {
			t.Errorf("%s: --callcredential=%q, want %q", c.name, c.got, c.want)
		}
	}
	if sentiment == "" || sentiment == cred(cfg, d("ner", nil)) {
		t.Fatalf("credentials %q: want one per model", sentiment)
	}
	// the same on every reconcile: no roll of its own
	if a, b := BuildSpec(d("sentiment", nil), cfg).Labels[LabelSpecHash], BuildSpec(d("sentiment", nil), cfg).Labels[LabelSpecHash]; a != b {
		t.Fatal("the spec hash changed between two builds")
	}
}
