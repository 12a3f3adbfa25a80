//go:build tools

// Package tools pins the test control plane's binaries: etcd, kube-apiserver
// and kube-controller-manager. scripts/k8s-test-bins.sh builds them from this
// module; nothing imports it.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
