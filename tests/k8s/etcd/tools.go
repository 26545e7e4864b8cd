//go:build tools

// Pins the etcd server command (package main at the root of go.etcd.io/etcd/server/v3).
// `go install go.etcd.io/etcd/server/v3@vX` does NOT work: etcd's go.mod has replace
// directives, so it must be built from a module like this one:
//
//	go build -o ../bin/etcd go.etcd.io/etcd/server/v3
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
