package controllers

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
)

// setWatchers are simulated agents that watch NodeFirewallAddressSets as
// the agent's informer does: each its own connection to the API server,
// one watch of every set, each event the whole object. An agent's input
// is what its watch has delivered: a watcher notes when a whole event
// that meets the current target has arrived, reading the event's bytes
// but decoding only its start (name and generation) or, for a small
// event, looking for an address in it.
type setWatchers struct {
	agents []*setWatcher
	// target is what the next measurement waits for.
	target atomic.Pointer[setTarget]
	// received counts the bytes of every event delivered.
	received atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// setTarget is a change an agent's input must reflect: the set called
// name at generation gen or later, or, when contains is set, an event of
// the set whose object holds that text.
type setTarget struct {
	name     string
	gen      int64
	contains string
}

type setWatcher struct {
	// arrived is when the target's event arrived, in Unix nanoseconds; 0
	// until then.
	arrived atomic.Int64
	// events counts the whole events delivered.
	events atomic.Int64
}

var (
	eventName       = regexp.MustCompile(`"metadata":\{.*?"name":"([^"]+)"`)
	eventGeneration = regexp.MustCompile(`"generation":(\d+)`)
)

// headLimit is how much of an event a watcher keeps: the metadata of an
// address set, and the whole of a small one.
const headLimit = 64 << 10

// startSetWatchers opens n watches of NodeFirewallAddressSets from
// resourceVersion rv, each over its own HTTP/1.1 connection, as n agents'
// informers would.
func startSetWatchers(cfg *rest.Config, n int, rv string) (*setWatchers, error) {
	c := rest.CopyConfig(cfg)
	c.NextProtos = []string{"http/1.1"} // a connection per watch, as agents have
	rt, err := rest.TransportFor(c)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: rt}
	ctx, cancel := context.WithCancel(context.Background())
	w := &setWatchers{cancel: cancel}
	w.target.Store(&setTarget{})
	url := fmt.Sprintf("%s/apis/firewall.nodefw.io/v1alpha1/nodefirewalladdresssets?watch=1&resourceVersion=%s", strings.TrimSuffix(c.Host, "/"), rv)
	started := make(chan error, n)
	for range n {
		a := &setWatcher{}
		w.agents = append(w.agents, a)
		w.wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				started <- err
				return
			}
			resp, err := hc.Do(req)
			if err != nil {
				started <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				started <- fmt.Errorf("watch: %s: %s", resp.Status, b)
				return
			}
			started <- nil
			w.read(a, resp.Body)
		})
	}
	for range n {
		if err := <-started; err != nil {
			w.stop()
			return nil, err
		}
	}
	return w, nil
}

// read takes a watch's events, one a line, until the stream ends.
func (w *setWatchers) read(a *setWatcher, body io.Reader) {
	br := bufio.NewReaderSize(body, 256<<10)
	head := make([]byte, 0, headLimit)
	whole := true // head holds the whole event so far
	for {
		chunk, err := br.ReadSlice('\n')
		w.received.Add(int64(len(chunk)))
		if room := headLimit - len(head); room > 0 {
			head = append(head, chunk[:min(room, len(chunk))]...)
		}
		if len(head) == headLimit {
			whole = false
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return
		}
		a.events.Add(1)
		if a.arrived.Load() == 0 && w.target.Load().metBy(head, whole) {
			a.arrived.Store(time.Now().UnixNano())
		}
		head, whole = head[:0], true
	}
}

// metBy reports whether an event, of which head is the start (all of it
// when whole), meets the target.
func (t *setTarget) metBy(head []byte, whole bool) bool {
	if t.name == "" {
		return false
	}
	m := eventName.FindSubmatch(head)
	if m == nil || string(m[1]) != t.name {
		return false
	}
	if t.contains != "" {
		return whole && bytes.Contains(head, []byte(t.contains))
	}
	g := eventGeneration.FindSubmatch(head)
	if g == nil {
		return false
	}
	gen, _ := strconv.ParseInt(string(g[1]), 10, 64)
	return gen >= t.gen
}

// await sets the target, runs change, and returns how long after change
// started the last agent's input met the target, or an error after limit.
func (w *setWatchers) await(t setTarget, limit time.Duration, change func() error) (time.Duration, error) {
	for _, a := range w.agents {
		a.arrived.Store(0)
	}
	w.target.Store(&t)
	defer w.target.Store(&setTarget{})
	start := time.Now()
	if err := change(); err != nil {
		return 0, err
	}
	for {
		var last int64
		waiting := 0
		for _, a := range w.agents {
			at := a.arrived.Load()
			if at == 0 {
				waiting++
			}
			last = max(last, at)
		}
		if waiting == 0 {
			return time.Unix(0, last).Sub(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("%d of %d agents' inputs do not reflect %+v after %v", waiting, len(w.agents), t, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *setWatchers) stop() {
	w.cancel()
	w.wg.Wait()
}
