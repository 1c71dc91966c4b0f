// Command pause is the sandbox ("pause") image of the local cluster
// (hack/cluster): it holds a pod's namespaces and waits, like
// registry.k8s.io/pause, for a signal to exit.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
