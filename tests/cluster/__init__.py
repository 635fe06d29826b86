"""A real Kubernetes control plane for tests and contributors (not part of the product).

`python -m tests.cluster build|up|down`: the pinned binaries built from the Go module proxy
(`build`), etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1
(`control_plane`), and a node agent that registers fake GPU nodes and runs the pods bound to them
as local processes (`node`). docs/development.md says how to use it.
"""
