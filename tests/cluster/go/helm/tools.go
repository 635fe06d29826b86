//go:build tools

// helm for the test control plane, built from the Go module proxy.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
