package reconnect

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaits(t *testing.T) {
	for _, tc := range []struct {
		method, url string
		want        bool
	}{
		{"GET", "/apis/firewall.nodefw.io/v1alpha1/nodefirewalls?resourceVersion=0", true},
		{"GET", "/apis/firewall.nodefw.io/v1alpha1/nodefirewalls?watch=true&fieldSelector=metadata.name%3Dn1", true},
		{"GET", "/api/v1/nodes", true},
		{"GET", "/api/v1/namespaces/kube-system/pods", true},
		{"GET", "/api/v1/namespaces", true},
		{"GET", "/api/v1/namespaces/kube-system", false},
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/nodefw-system/leases/nodefw", false},
		{"GET", "/apis/firewall.nodefw.io/v1alpha1/nodefirewalls/n1", false},
		{"PUT", "/apis/firewall.nodefw.io/v1alpha1/nodefirewalls/n1/status", false},
		{"POST", "/apis/firewall.nodefw.io/v1alpha1/nodefirewalls", false},
		{"GET", "/readyz", false},
	} {
		req := httptest.NewRequest(tc.method, tc.url, nil)
		if got := Waits(req); got != tc.want {
			t.Errorf("Waits(%s %s) = %v, want %v", tc.method, tc.url, got, tc.want)
		}
	}
}

// TestListWaitsForTheServer stops a server, sends a list and a named get,
// and starts the server again on the same address: the get fails at once,
// the list answers within a probe interval of the server's return.
func TestListWaitsForTheServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	tr := &Transport{Next: http.DefaultTransport, Every: 50 * time.Millisecond}
	c := &http.Client{Transport: tr}

	if _, err := c.Get("http://" + addr + "/api/v1/nodes/n1"); err == nil {
		t.Fatal("a get of one object answered with the server down")
	}

	type result struct {
		status int
		err    error
		at     time.Time
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get("http://" + addr + "/api/v1/nodes")
		r := result{err: err, at: time.Now()}
		if err == nil {
			r.status = resp.StatusCode
			_ = resp.Body.Close()
		}
		done <- r
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("the list returned while the server was down: %+v", r)
	default:
	}

	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/api/v1/nodes", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) })
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("the list was sent while /readyz failed: %+v", r)
	default:
	}
	back := time.Now()
	ready.Store(true)
	r := <-done
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("list after the server returned: %d, %v", r.status, r.err)
	}
	if took := r.at.Sub(back); took > 500*time.Millisecond {
		t.Errorf("the list answered %s after the server was ready; want within a few probe intervals", took)
	}
}

// TestWaitEndsWithTheContext: a waiting list returns when its context ends.
func TestWaitEndsWithTheContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	tr := &Transport{Next: http.DefaultTransport, Every: 20 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/nodes?watch=true", nil)
	start := time.Now()
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("no error from a watch whose context ended")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("returned %s after the context ended", took)
	}
}
