package netnstest

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ConnectRate opens TCP connections from n to host:port for d with the
// given number of workers, each closing its connection with a reset at
// once (no TIME_WAIT), and returns the connections per second. Every
// connection is a new flow: its SYN walks the host's input chain down to
// the rule that accepts it. More than 1% of connections failing is an
// error.
func (n *NS) ConnectRate(host netip.Addr, port uint16, workers int, d time.Duration) (float64, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	total, failed := 0, 0
	var firstErr error
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, bad := 0, 0
			err := n.Do(func() error {
				addr := &unix.SockaddrInet4{Port: int(port), Addr: host.As4()}
				for time.Now().Before(deadline) {
					fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						return err
					}
					_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: 1})
					_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
					if err := unix.Connect(fd, addr); err == nil {
						ok++
					} else {
						bad++
					}
					unix.Close(fd)
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			total += ok
			failed += bad
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	if failed > total/100 {
		return 0, fmt.Errorf("%d of %d connections failed", failed, failed+total)
	}
	return float64(total) / elapsed.Seconds(), nil
}
