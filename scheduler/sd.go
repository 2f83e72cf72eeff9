package scheduler

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
)

// SDPath is where the scheduler serves Prometheus's HTTP service discovery
// (http_sd_configs), so Prometheus needs no Docker socket (issue 17).
const SDPath = "/sd"

// SDTimeout bounds one discovery read (three Docker list calls).
const SDTimeout = 10 * time.Second

// The networks whose addresses are scrape targets: the stack's services on
// the control network, the model services (those labelled with a model) on
// the runtimes'.
const (
	SDControlNetwork = "nlpswarm-control"
	SDRuntimeNetwork = "nlpswarm-runtimes"
)

// SDSnapshot is what the target list is computed from: the services, their
// tasks, and the nodes' hostnames by node ID.
type SDSnapshot struct {
	Services []swarm.Service
	Tasks    []swarm.Task
	Nodes    map[string]string
}

// SDGroup is one entry of Prometheus's HTTP SD format.
type SDGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// SDTargets is the scrape target list (pure): one group per address of every
// task whose desired state is running, of every service labelled
// nlpswarm.metrics.port, on the control network (any such service) or the
// runtimes' (model services only), at that port. Its labels are the ones the
// dashboards, alerts and the apiserver's monitor pages query (and the Swarm
// relabelling this replaces gave): service (the Swarm service's name), model
// (nlpswarm.model, empty for the stack's services), node (the task's node
// hostname, its ID when unknown) and slot. Ordered by service, slot, target.
func SDTargets(s SDSnapshot) []SDGroup {
	services := make(map[string]swarm.Service, len(s.Services))
	for _, svc := range s.Services {
		services[svc.ID] = svc
	}
	out := []SDGroup{}
	for _, t := range s.Tasks {
		if t.DesiredState != swarm.TaskStateRunning {
			continue
		}
		svc, ok := services[t.ServiceID]
		if !ok {
			continue
		}
		labels := svc.Spec.Labels
		port, err := strconv.Atoi(labels[LabelMetricsPort])
		if err != nil || port <= 0 || port > 65535 {
			continue
		}
		model := labels[LabelModel]
		node := s.Nodes[t.NodeID]
		if node == "" {
			node = t.NodeID
		}
		for _, na := range t.NetworksAttachments {
			switch na.Network.Spec.Name {
			case SDControlNetwork:
			case SDRuntimeNetwork:
				if model == "" {
					continue
				}
			default:
				continue
			}
			for _, a := range na.Addresses {
				if !a.IsValid() {
					continue
				}
				out = append(out, SDGroup{
					Targets: []string{fmt.Sprintf("%s:%d", a.Addr().String(), port)},
					Labels: map[string]string{
						"service": svc.Spec.Name, "model": model, "node": node, "slot": strconv.Itoa(t.Slot),
					},
				})
			}
		}
	}
	slices.SortFunc(out, func(a, b SDGroup) int {
		return cmp.Or(cmp.Compare(a.Labels["service"], b.Labels["service"]),
			cmp.Compare(len(a.Labels["slot"]), len(b.Labels["slot"])),
			cmp.Compare(a.Labels["slot"], b.Labels["slot"]),
			cmp.Compare(a.Targets[0], b.Targets[0]))
	})
	return out
}

// SDDocker is the part of the Engine API discovery reads; Docker (and
// *client.Client) satisfy it.
type SDDocker interface {
	ServiceList(ctx context.Context, o client.ServiceListOptions) (client.ServiceListResult, error)
	TaskList(ctx context.Context, o client.TaskListOptions) (client.TaskListResult, error)
	NodeList(ctx context.Context, o client.NodeListOptions) (client.NodeListResult, error)
}

// ReadSDSnapshot reads the labelled services, the running tasks and the nodes.
func ReadSDSnapshot(ctx context.Context, d SDDocker) (SDSnapshot, error) {
	var s SDSnapshot
	sl, err := d.ServiceList(ctx, client.ServiceListOptions{Filters: client.Filters{}.Add("label", LabelMetricsPort)})
	if err != nil {
		return s, fmt.Errorf("list services: %w", err)
	}
	tl, err := d.TaskList(ctx, client.TaskListOptions{Filters: client.Filters{}.Add("desired-state", "running")})
	if err != nil {
		return s, fmt.Errorf("list tasks: %w", err)
	}
	nl, err := d.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return s, fmt.Errorf("list nodes: %w", err)
	}
	s.Services, s.Tasks, s.Nodes = sl.Items, tl.Items, make(map[string]string, len(nl.Items))
	for _, n := range nl.Items {
		s.Nodes[n.ID] = n.Description.Hostname
	}
	return s, nil
}

// SDHandler serves GET SDPath: SDTargets over the snapshot read now, for
// Prometheus's http_sd_configs, which sends the read token (ReadOnly). Any
// scheduler replica answers (leading or not). When the snapshot cannot be
// read it answers 503, and Prometheus keeps the targets it had.
func SDHandler(snapshot func(context.Context) (SDSnapshot, error), readToken string, log *slog.Logger) http.Handler {
	return ReadOnly(readToken, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !getOnly(w, req) {
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), SDTimeout)
		defer cancel()
		s, err := snapshot(ctx)
		if err != nil {
			log.Warn("service discovery", "err", err)
			apierror.Write(w, http.StatusServiceUnavailable, "unavailable", "the scheduler cannot read the Docker engine now; retry shortly")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(SDTargets(s))
	}))
}
