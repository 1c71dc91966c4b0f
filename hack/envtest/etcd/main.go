// Command etcd builds the upstream etcd server from the module proxy, for
// envtest and the local demo control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
