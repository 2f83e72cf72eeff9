// Package swarmlab starts a real multi-node Docker Swarm on one machine for
// tests: one dockerd per network namespace, each with its own hostname (UTS
// namespace), mount namespace, data-root, exec-root, socket, managed
// containerd and cgroup parent, joined into one swarm over a private subnet.
// Node 1 initialises the swarm; Options.Managers nodes from node 1 on
// (default 1) join as managers, the rest as workers: three managers make a
// Raft quorum that survives losing one of them (Lab.Managers; Node.Kill of a
// manager is its power cut, Boot brings it back into the quorum with its
// state).
//
// What it owns, all named with the fixed prefix "nlpsl" so that a later run
// can clear what a crashed run left behind:
//
//   - network namespaces nlpsl-hub (a bridge, nlpsl-br) and nlpsl-n1…nlpsl-nN
//     (one per node, eth0 = 10.231.0.1N/24);
//   - one veth in the host namespace, nlpsl-root = 10.231.0.1/24, the only
//     change to the host's network: tests reach published ports on the nodes'
//     addresses through it. Nodes have no default route: they reach nothing
//     but each other and 10.231.0.1;
//   - /run/nlpsl/<node> (bind-mounted as the node's /run: docker.sock,
//     docker.pid, the exec-root) and /var/lib/nlpsl/<node> (data-root, daemon
//     config, dockerd log), /var/lib/nlpsl/shared (files nodes bind-mount);
//   - cgroups /nlpsl-<node> (the nodes' --cgroup-parent);
//   - the dockerd, containerd, shim and container processes it started.
//
// It must not touch anything else: not the host's engine, its swarm, images,
// containers or iptables, not other namespaces or interfaces. It reads from
// the host engine only to `docker save` images it loads into the nodes. One
// lab runs at a time on a machine (a flock on /run/nlpsl.lock); clearing
// leftovers happens only under that lock.
//
// Requirements: root (CAP_SYS_ADMIN, CAP_NET_ADMIN), ip (iproute2), nsenter
// and unshare (util-linux), dockerd on PATH, and a data filesystem where the
// chosen storage driver works nested (overlay2 on ext4 here). Without them
// Start skips the test with the reason, or fails it under CI=true.
package swarmlab
