// Command etcd is etcd's own server (etcdmain.Main from go.etcd.io/etcd/server/v3), built at the
// version k8s.io/kubernetes itself is tested with, so the control plane comes from one module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
