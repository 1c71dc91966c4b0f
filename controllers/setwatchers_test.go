package controllers

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/client-go/rest"

	"github.com/nodefw/nodefw/internal/addressshard"
)

// setWatchers are simulated agents that watch the address sets' shards
// as the agent's informer does: each its own connection to the API
// server, one watch of the ControllerRevisions of the controller's
// namespace that carry the shard label, each event the whole shard. An
// agent's input is what its watch has delivered: a watcher notes when a
// whole event that meets the current target has arrived, reading the
// event's bytes and looking in it for the set's name and an address.
type setWatchers struct {
	agents []*setWatcher
	// target is what the next measurement waits for.
	target atomic.Pointer[setTarget]
	// received counts the bytes of every event delivered.
	received atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// setTarget is a change an agent's input must reflect: a shard of the
// set called name created holding the text contains.
type setTarget struct {
	name     string
	contains string
}

type setWatcher struct {
	// arrived is when the target's event arrived, in Unix nanoseconds; 0
	// until then.
	arrived atomic.Int64
	// events counts the whole events delivered.
	events atomic.Int64
}

// headLimit is how much of an event a watcher keeps: the whole of a
// shard, which holds at most twice addressshard.PerShard entries.
const headLimit = 64 << 10

// startSetWatchers opens n watches of the address sets' shards in
// namespace from resourceVersion rv, each over its own HTTP/1.1
// connection, as n agents' informers would.
func startSetWatchers(cfg *rest.Config, n int, namespace, rv string) (*setWatchers, error) {
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
	watchURL := fmt.Sprintf("%s/apis/apps/v1/namespaces/%s/controllerrevisions?watch=1&labelSelector=%s&resourceVersion=%s",
		strings.TrimSuffix(c.Host, "/"), namespace, url.QueryEscape(addressshard.Selector().String()), rv)
	started := make(chan error, n)
	for range n {
		a := &setWatcher{}
		w.agents = append(w.agents, a)
		w.wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, watchURL, nil)
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
// when whole), meets the target: the creation of a shard of the set that
// holds the text.
func (t *setTarget) metBy(head []byte, whole bool) bool {
	if t.name == "" || !whole || !bytes.HasPrefix(head, []byte(`{"type":"ADDED"`)) {
		return false
	}
	set := fmt.Sprintf("%q:%q", addressshard.AnnotationSet, t.name)
	return bytes.Contains(head, []byte(set)) && bytes.Contains(head, []byte(t.contains))
}

// arrivals are when the agents' inputs met a target, after the change
// started, sorted, and how long the change's own writes took.
type arrivals struct {
	at     []time.Duration
	change time.Duration
}

func (a arrivals) last() time.Duration { return a.at[len(a.at)-1] }

// String gives the change's writes, and the first, the median, the 90th
// percentile and the last arrival.
func (a arrivals) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("writes returned after %v; first %v, median %v, p90 %v, last %v", r(a.change), r(a.at[0]), r(a.at[len(a.at)/2]),
		r(a.at[len(a.at)*9/10]), r(a.last()))
}

// await sets the target, runs change, and returns when after change
// started each agent's input met the target, or an error after limit.
func (w *setWatchers) await(t setTarget, limit time.Duration, change func() error) (arrivals, error) {
	for _, a := range w.agents {
		a.arrived.Store(0)
	}
	w.target.Store(&t)
	defer w.target.Store(&setTarget{})
	start := time.Now()
	if err := change(); err != nil {
		return arrivals{}, err
	}
	changed := time.Since(start)
	for {
		waiting := 0
		for _, a := range w.agents {
			if a.arrived.Load() == 0 {
				waiting++
			}
		}
		if waiting == 0 {
			out := arrivals{at: make([]time.Duration, len(w.agents)), change: changed}
			for i, a := range w.agents {
				out.at[i] = time.Unix(0, a.arrived.Load()).Sub(start)
			}
			slices.Sort(out.at)
			return out, nil
		}
		if time.Since(start) > limit {
			return arrivals{}, fmt.Errorf("%d of %d agents' inputs do not reflect %+v after %v", waiting, len(w.agents), t, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cpuTimes are the CPU times used so far by this process (the controller
// and the simulated agents) and by its children, the API server and etcd,
// by command name.
func cpuTimes() map[string]time.Duration {
	out := map[string]time.Duration{}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out["test process"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	self := os.Getpid()
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime are fields 14 and 15.
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(b[end+1:]))
		if len(f) < 13 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != self {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[string(b[open+1:end])] += time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100
	}
	return out
}

// cpuSince is the CPU time used since before, by command, as text.
func cpuSince(before map[string]time.Duration) string {
	var parts []string
	for k, v := range cpuTimes() {
		parts = append(parts, fmt.Sprintf("%s %.1f s", k, (v-before[k]).Seconds()))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func (w *setWatchers) stop() {
	w.cancel()
	w.wg.Wait()
}
