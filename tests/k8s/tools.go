//go:build tools

// Package tools pins the Kubernetes control-plane commands in this module's
// dependency graph (go.mod/go.sum), so that from this directory
//
//	go build -o bin/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
//	go build -o bin/kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
//	go build -o bin/kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
//
// resolve without further downloads. kube-scheduler is included because kwok
// does not schedule: without a scheduler Pods never get spec.nodeName and stay
// Pending. This file is never compiled (build tag `tools`); importing main
// packages is allowed here precisely because of that tag.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
