// etcd for the test control plane: etcd's own main, built from the Go module proxy (etcd's
// server module cannot be `go install`ed: its go.mod has relative replace lines).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
