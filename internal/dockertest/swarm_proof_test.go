package dockertest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// TestSwarmProof shows that this engine runs our scratch image as a Swarm
// service with endpoint_mode dnsrr on an overlay network, reachable both
// through a host-mode published port on loopback and from a second container
// on the same network by the tasks.<service> DNS name (DESIGN.md: no IP_VS,
// so no VIP and no routing mesh).
func TestSwarmProof(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm proof in -short mode")
	}
	cl := Swarm(t)
	image := Image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	netName := Name("nlpswarm-proof-net")
	nw, err := cl.NetworkCreate(ctx, netName, client.NetworkCreateOptions{
		Driver: "overlay", Attachable: true, Labels: map[string]string{"nlpswarm.test": "proof"},
	})
	if err != nil {
		t.Fatalf("overlay network: %v", err)
	}
	t.Cleanup(func() { cl.NetworkRemove(context.Background(), nw.ID, client.NetworkRemoveOptions{}) })

	port := freePort(t)
	svcName := Name("nlpswarm-proof")
	replicas := uint64(1)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: svcName, Labels: map[string]string{"nlpswarm.test": "proof"}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image: image,
				Args:  []string{"netcheck", "--listen=:8080"},
			},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: nw.ID}},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		EndpointSpec: &swarm.EndpointSpec{
			Mode: swarm.ResolutionModeDNSRR,
			Ports: []swarm.PortConfig{{
				Protocol: network.TCP, TargetPort: 8080, PublishedPort: uint32(port),
				PublishMode: swarm.PortConfigPublishModeHost,
			}},
		},
	}
	created, err := cl.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec})
	if err != nil {
		t.Fatalf("service create: %v", err)
	}
	t.Cleanup(func() { cl.ServiceRemove(context.Background(), created.ID, client.ServiceRemoveOptions{}) })

	// 1. through the host-mode published port on loopback
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	body := waitHTTP(t, ctx, url)
	if !strings.HasPrefix(body, "netcheck ") {
		t.Fatalf("published port answered %q", body)
	}
	t.Logf("host-mode port %d answered %q", port, strings.TrimSpace(body))

	res, err := cl.ServiceInspect(ctx, created.ID, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	insp := res.Service
	if insp.Spec.EndpointSpec == nil || insp.Spec.EndpointSpec.Mode != swarm.ResolutionModeDNSRR {
		t.Fatalf("endpoint mode: %+v", insp.Spec.EndpointSpec)
	}

	// 2. from a second container on the same overlay network, by DNS
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--network", netName, image,
		"healthcheck", "http://tasks."+svcName+":8080/healthz").CombinedOutput()
	if err != nil {
		t.Fatalf("second container on the overlay could not reach tasks.%s: %v\n%s", svcName, err, out)
	}
}

func waitHTTP(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	var last error
	for ctx.Err() == nil {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
			last = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			last = err
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("%s never answered: %v", url, last)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
