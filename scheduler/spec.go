package scheduler

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// Labels the platform puts on what it owns.
const (
	LabelManaged     = "nlpswarm.managed"
	LabelOwner       = "nlpswarm.owner"
	LabelModel       = "nlpswarm.model"
	LabelVersion     = "nlpswarm.version"
	LabelTask        = "nlpswarm.task"
	LabelSpecHash    = "nlpswarm.spec-hash"
	LabelBackend     = "nlpswarm.backend"
	LabelMetricsPort = "nlpswarm.metrics.port"
	// LabelSlot is the replica slot of a GPU replica's own service
	// (GroupServiceName).
	LabelSlot = "nlpswarm.slot"
	// LabelTrack is "canary" on a model's canary service (and its
	// tasks); a stable service has none, as before tracks existed, so its
	// spec and hash are unchanged.
	LabelTrack  = "nlpswarm.track"
	RuntimePort = 8080
	// ArtifactCacheDir is where model services unpack artifacts by digest:
	// a node-local named volume, so replicas on one node download once.
	ArtifactCacheDir = "/var/lib/nlpswarm/cache"
	// DefaultArtifactVolume names that volume.
	DefaultArtifactVolume = "nlpswarm-artifacts"
)

// Least privilege for every model service (scheduler/doc.go, issue 17 item
// 7): a model service runs code and data a model owner uploaded, so it gets
// no more than serving needs.
const (
	// RuntimeUser is the uid:gid model services run as: nobody, the image's
	// own USER, which owns the image's /var/lib/nlpswarm/cache, so Docker
	// copies that ownership into the artifact volume when it first creates
	// it and the runtime can write there without an init step.
	RuntimeUser = "65534:65534"
	// TmpDir is the only writable path besides the artifact cache: a tmpfs
	// (the root filesystem is read-only) for the runtime's temporary model
	// folders (models.sanitizedCopy).
	TmpDir       = "/tmp"
	TmpSizeBytes = 64 << 20
	TmpMode      = 0o1777 // the raw mode bits Docker passes as mode=1777, like --mount tmpfs-mode=1777
	// DefaultNanoCPUs is the CPU limit of a deployment that sets none: 2 CPUs.
	DefaultNanoCPUs = 2e9
	// PidsLimit caps the processes and threads of one task (a fork bomb or a
	// thread leak stays inside it).
	PidsLimit = 512
	// Log rotation: at most LogMaxFiles json-file logs of LogMaxSize per task.
	LogDriver   = "json-file"
	LogMaxSize  = "10m"
	LogMaxFiles = "3"
)

// ServiceName is the Swarm service of a deployment by its key
// (deployment.Key: a model's name for its stable track, name_canary for its
// canary) (a CPU deployment's), and the network alias of each of a GPU
// deployment's replica services, so that tasks.<ServiceName> in Swarm's DNS
// answers every replica either way. It is deployment.ServiceName's.
func ServiceName(key string) string { return deployment.ServiceName(deployment.SplitKey(key)) }

// GroupServiceName is the service of one replica slot of a GPU deployment:
// each GPU replica is a service of its own, pinned to its node and GPUs
// (doc.go, "GPU replicas").
func GroupServiceName(model string, slot int) string {
	return ServiceName(model) + "-g" + strconv.Itoa(slot)
}

// Desired is one deployment as the service-spec builder takes it: the
// stored desired state and, for one replica of a GPU deployment, where
// placement pinned it.
type Desired struct {
	deployment.Desired
	// Pin is set by GPU placement: the spec is then that of one replica
	// slot's own service (GroupServiceName), pinned to the node and GPUs.
	Pin *Pin
	// MaxPerNode caps the replicas Swarm runs on one node (MaxPerNode's
	// spread decision); 0: no cap.
	MaxPerNode uint64
}

// Pin fixes one replica slot of a GPU deployment to a node and GPUs.
type Pin struct {
	Slot     int      `json:"slot"`
	NodeID   string   `json:"node"`
	GPUUUIDs []string `json:"gpus"`
	// New: placed by this pass (not held from an earlier one).
	New bool `json:"new,omitempty"`
	// Roll is how a rolling update of the slot's service (a new version,
	// image...) runs, when it has one: RollInPlace, RollMoved,
	// RollStopFirst or RollDeferred (placeGPUs decides; Why says why).
	Roll string `json:"roll,omitempty"`
	Why  string `json:"why,omitempty"`
}

// How a GPU replica's rolling update runs (doc.go, "Rolling a GPU
// replica"). Swarm's start-first update starts the new task beside the old
// one, pinned to the same GPU, so that GPU holds two copies of the model for
// a while.
const (
	// RollInPlace: start-first on the slot's GPU, which has room for a
	// second copy.
	RollInPlace = "start-first in place"
	// RollMoved: the slot's GPU has no room for a second copy; the slot is
	// placed anew on a GPU that has (start-first: the old task serves
	// until the new one runs there).
	RollMoved = "start-first, moved"
	// RollStopFirst: no GPU has room; the old task stops before the new
	// one starts on its GPU, one replica of the model at a time.
	RollStopFirst = "stop-first"
	// RollDeferred: a stop-first roll waiting for another replica of the
	// model to finish rolling.
	RollDeferred = "deferred"
)

// SpecConfig is the cluster-wide part of every model service.
type SpecConfig struct {
	// Owner names the platform instance: a reconciler manages (and removes as
	// orphans) only services with its owner label, so two platforms or test
	// runs on one swarm leave each other alone. Default "nlpswarm".
	Owner    string
	Image    string // image ID (sha256:…) so no node pulls: the go engine's runtime
	ORTImage string // the ONNX Runtime runtime (nlpswarm-ort) by ID; "": none (Engine)
	// LlamaImage is the generation runtime on CPUs (nlpswarm-llama) by ID,
	// LlamaCUDAImage the one with ggml's CUDA backend
	// (nlpswarm-llama-cuda); "": none, and text-generation deployments
	// that need it are refused (EngineOf).
	LlamaImage      string
	LlamaCUDAImage  string
	Network         string
	ArtifactBaseURL string // e.g. http://apiserver:8081
	// ArtifactKey signs each model service's artifact credential
	// (artifactcred.Key of the internal token): the service gets a
	// credential for its own digest only, never the token. nil: none, and
	// the apiserver refuses the download.
	ArtifactKey []byte
	// CallKey derives each model service's call credential
	// (artifactcred.CallKey of the replica call secret): the runtime
	// requires it on its inference and metadata routes, and the gateways,
	// which hold the same secret, send it. nil: none, and the runtimes
	// answer anyone on their network.
	CallKey []byte
	// Now is the clock credentials are minted by (time.Now when nil); the
	// expiry is on a grid (artifactcred.Expiry), so the spec stays the same
	// between reconciles and changes once an artifactcred.Period.
	Now                 func() time.Time
	PlacementConstraint string // e.g. node.labels.type==machine-learning
	// ArtifactVolume is the node-local volume (local driver) mounted at
	// ArtifactCacheDir in every model service; DefaultArtifactVolume when "".
	ArtifactVolume string
	// Args replaces the runtime's arguments (tests run a stand-in server).
	Args []string
}

// Engine is the inference engine a deployment's replicas run and the image
// that has it.
type Engine struct {
	Backend string // deployment.BackendGo or deployment.BackendORT
	Image   string
}

// Engine resolves the backend a deployment asks for: its own, else ort when
// an ORT image is configured, else go. Asking for ort with no ORT image (or
// for an engine this scheduler does not know) is an error, which Diff
// reports as unplaceable.
func (c SpecConfig) Engine(asked string) (Engine, error) {
	switch asked {
	case deployment.BackendDefault:
		if c.ORTImage != "" {
			return Engine{Backend: deployment.BackendORT, Image: c.ORTImage}, nil
		}
		return Engine{Backend: deployment.BackendGo, Image: c.Image}, nil
	case deployment.BackendGo:
		return Engine{Backend: deployment.BackendGo, Image: c.Image}, nil
	case deployment.BackendORT:
		if c.ORTImage == "" {
			return Engine{}, fmt.Errorf("backend ort asked for, but the scheduler has no ONNX Runtime image (start it with --ortimage, e.g. make up ORT=1), or redeploy with --backend go")
		}
		return Engine{Backend: deployment.BackendORT, Image: c.ORTImage}, nil
	}
	return Engine{}, fmt.Errorf("unknown backend %q (go or ort)", asked)
}

func (c SpecConfig) artifactVolume() string {
	if c.ArtifactVolume == "" {
		return DefaultArtifactVolume
	}
	return c.ArtifactVolume
}

func (c SpecConfig) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func (c SpecConfig) owner() string {
	if c.Owner == "" {
		return "nlpswarm"
	}
	return c.Owner
}

// BuildSpec is the pure function from a deployment to its service spec. The
// engine (c.Engine) picks the image and the runtime's --engine.backend;
// Diff refuses a deployment whose engine cannot be had before building its
// spec (built anyway, the spec has no image and Swarm refuses it).
func BuildSpec(d Desired, c SpecConfig) swarm.ServiceSpec {
	eng, _ := c.EngineOf(d.Desired)
	name := ServiceName(d.Key())
	network := swarm.NetworkAttachmentConfig{Target: c.Network}
	replicas := uint64(d.Replicas)
	if d.Pin != nil {
		name = GroupServiceName(d.Key(), d.Pin.Slot)
		network.Aliases = []string{ServiceName(d.Key())}
		replicas = min(replicas, 1)
	}
	reservation := max(d.MemoryReservation, deployment.MinMemory)
	limit := d.MemoryBytes
	if limit <= 0 {
		limit = 2 * reservation
	}
	reservation = min(reservation, limit)
	// A deployment without a CPU figure reserves none (reservations are
	// bookkeeping) but is still capped at DefaultNanoCPUs.
	limitCPUs, reserveCPUs := int64(d.CPUs*1e9), int64(d.CPUs*1e9/4)
	if limitCPUs <= 0 {
		limitCPUs, reserveCPUs = DefaultNanoCPUs, 0
	}
	args := c.Args
	switch {
	case args != nil:
	case Generation(d.Desired):
		args = generationArgs(d, c, eng, limitCPUs)
	default:
		args = append([]string{"runtime",
			"--name=" + d.Model, "--task=" + d.Task,
			"--artifacturl=" + strings.TrimRight(c.ArtifactBaseURL, "/") + "/internal/blobs/" + d.Digest,
			"--digest=" + d.Digest,
			"--listen=:" + strconv.Itoa(RuntimePort),
			"--cachedir=" + ArtifactCacheDir,
			"--engine.backend=" + eng.Backend,
		}, credentialArgs(d, c)...)
	}
	constraints := []string{}
	if c.PlacementConstraint != "" {
		constraints = append(constraints, c.PlacementConstraint)
	}
	keys := make([]string, 0, len(d.Labels))
	for k := range d.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		constraints = append(constraints, fmt.Sprintf("node.labels.%s==%s", k, d.Labels[k]))
	}
	var env []string
	if d.Pin != nil {
		constraints = append(constraints, "node.id=="+d.Pin.NodeID)
		env = append(env, "NVIDIA_VISIBLE_DEVICES="+strings.Join(d.Pin.GPUUUIDs, ","))
	} else if d.GPUs == 0 {
		env = append(env, "NVIDIA_VISIBLE_DEVICES=void")
	}
	grace, startPeriod := 30*time.Second, 60*time.Second
	if Generation(d.Desired) {
		startPeriod = GenerationStartPeriod
	}
	labels := map[string]string{
		LabelManaged: "true", LabelOwner: c.owner(), LabelModel: d.Model, LabelVersion: strconv.Itoa(d.Version), LabelTask: d.Task,
		LabelMetricsPort: strconv.Itoa(RuntimePort), LabelBackend: eng.Backend,
	}
	containerLabels := map[string]string{LabelManaged: "true", LabelModel: d.Model}
	if d.Track == deployment.TrackCanary {
		labels[LabelTrack], containerLabels[LabelTrack] = deployment.TrackCanary, deployment.TrackCanary
	}
	if d.Pin != nil {
		labels[LabelSlot] = strconv.Itoa(d.Pin.Slot)
		containerLabels[LabelSlot] = labels[LabelSlot]
	}
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: labels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:  eng.Image,
				Args:   args,
				Env:    env,
				Labels: containerLabels,
				Healthcheck: &container.HealthConfig{
					Test: []string{"CMD", "/usr/local/bin/nlpswarm", "healthcheck", fmt.Sprintf("http://127.0.0.1:%d/v2/health/ready", RuntimePort)},
					// Swarm puts a task in tasks.<service> DNS (where the
					// gateway finds it) only after its first passing check,
					// which Docker 20.10 runs one Interval after the start
					// (no start_interval before API 1.44): 1 s rather than 2 s
					// takes a second off every cold start, scale from zero
					// included (README, "Autoscaling"). A busy replica must
					// still not be killed as unhealthy: on a saturated node an
					// exec check can take seconds, hence 5 retries of 5 s.
					Interval:    time.Second,
					Timeout:     5 * time.Second,
					Retries:     5,
					StartPeriod: startPeriod,
				},
				StopGracePeriod: &grace,
				User:            RuntimeUser,
				ReadOnly:        true,
				CapabilityDrop:  []string{"ALL"},
				Mounts: []mount.Mount{{
					Type: mount.TypeVolume, Source: c.artifactVolume(), Target: ArtifactCacheDir,
					VolumeOptions: &mount.VolumeOptions{Labels: map[string]string{LabelManaged: "true"}},
				}, {
					Type: mount.TypeTmpfs, Target: TmpDir,
					TmpfsOptions: &mount.TmpfsOptions{SizeBytes: TmpSizeBytes, Mode: TmpMode},
				}},
			},
			Resources: &swarm.ResourceRequirements{
				Limits:       &swarm.Limit{NanoCPUs: limitCPUs, MemoryBytes: limit, Pids: PidsLimit},
				Reservations: &swarm.Resources{NanoCPUs: reserveCPUs, MemoryBytes: reservation},
			},
			LogDriver:     &swarm.Driver{Name: LogDriver, Options: map[string]string{"max-size": LogMaxSize, "max-file": LogMaxFiles}},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny, Delay: durationPtr(2 * time.Second), Window: durationPtr(time.Minute)},
			Placement: &swarm.Placement{
				Constraints: constraints,
				Preferences: []swarm.PlacementPreference{{Spread: &swarm.SpreadOver{SpreadDescriptor: "node.id"}}},
				MaxReplicas: d.MaxPerNode,
			},
			Networks: []swarm.NetworkAttachmentConfig{network},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		UpdateConfig: &swarm.UpdateConfig{
			Parallelism: 1, Order: swarm.UpdateOrderStartFirst, FailureAction: swarm.UpdateFailureActionRollback,
			Monitor: 15 * time.Second, MaxFailureRatio: 0,
		},
		RollbackConfig: &swarm.UpdateConfig{Parallelism: 1, Order: swarm.UpdateOrderStartFirst, FailureAction: swarm.UpdateFailureActionPause, Monitor: 15 * time.Second},
		EndpointSpec:   &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR},
	}
	spec.Annotations.Labels[LabelSpecHash] = SpecHash(spec)
	return spec
}

func durationPtr(d time.Duration) *time.Duration { return &d }

// credentialArgs are a model service's credentials, for either role: one
// to download its own artifact, one its routes require (the model's, so
// every replica, and each GPU slot's service, of it has the same one, and
// no other model's).
func credentialArgs(d Desired, c SpecConfig) []string {
	var args []string
	if cred := artifactcred.Mint(c.ArtifactKey, d.Digest, artifactcred.Expiry(d.Digest, c.now())); cred != "" {
		args = append(args, "--artifactcredential="+cred)
	}
	if cred := artifactcred.Call(c.CallKey, d.Model); cred != "" {
		args = append(args, "--callcredential="+cred)
	}
	return args
}

// SpecHash identifies a spec's content (without the hash label itself), so a
// reconcile pass can tell whether a service needs an update.
func SpecHash(s swarm.ServiceSpec) string {
	labels := map[string]string{}
	for k, v := range s.Annotations.Labels {
		if k != LabelSpecHash {
			labels[k] = v
		}
	}
	s.Annotations.Labels = labels
	s.Mode = swarm.ServiceMode{} // scaling alone is not a spec change
	b, _ := json.Marshal(s)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}
