//go:build tools

// Pins kwok. Equivalent one-liner (kwok's go.mod has no replace directives):
//
//	GOBIN=$PWD/../bin go install sigs.k8s.io/kwok/cmd/kwok@v0.8.0
//
// From this module: go build -o ../bin/kwok sigs.k8s.io/kwok/cmd/kwok
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
