//go:build tools

// Package tools pins the KEDA commands this module builds, so `go mod tidy` keeps their dependencies.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
