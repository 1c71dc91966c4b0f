// Command testserver is the workload of the local cluster's end-to-end
// suite (hack/cluster, test/cluster): a static server for FROM-scratch pods
// that answers every TCP connection with its host name (the pod's name, or
// the node's with hostNetwork) and a newline, and echoes every UDP
// datagram, so that a probe knows both that it got through and which pod
// answered.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	tcp := flag.String("tcp", "8080", "comma-separated TCP ports to answer on")
	udp := flag.String("udp", "8081", "comma-separated UDP ports to echo on")
	flag.Parse()
	name, err := os.Hostname()
	if err != nil {
		log.Fatal(err)
	}
	for _, port := range ports(*tcp) {
		l, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(port)))
		if err != nil {
			log.Fatal(err)
		}
		go answer(l, name)
	}
	for _, port := range ports(*udp) {
		pc, err := net.ListenPacket("udp", net.JoinHostPort("", strconv.Itoa(port)))
		if err != nil {
			log.Fatal(err)
		}
		go echo(pc)
	}
	log.Printf("%s: answering tcp %s, echoing udp %s", name, *tcp, *udp)
	select {}
}

func ports(list string) []int {
	var out []int
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 || p > 65535 {
			log.Fatalf("invalid port %q", s)
		}
		out = append(out, p)
	}
	return out
}

func answer(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = fmt.Fprintln(c, name)
		}()
	}
}

func echo(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			log.Fatal(err)
		}
		_, _ = pc.WriteTo(buf[:n], addr)
	}
}
