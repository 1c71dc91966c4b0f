// Package reconnect brings the manager's and the agents' watches back
// within a second of the API server's return, whatever the outage's
// length.
//
// client-go's reflector retries a failed list or watch after an
// exponential backoff capped at 30s with up to 100% jitter, reset only
// after two minutes without a failure: after a long outage a watch comes
// back up to a minute after the API server does. The reflector takes a
// backoff of its own (ReflectorOptions.Backoff), but shared informers, and
// so controller-runtime's cache, do not pass one through. Instead, the
// informers' requests do not fail while the API server is unreachable: a
// list or watch that cannot reach it waits, probing /readyz every
// ProbeInterval, and is sent again as soon as the API server is ready.
// The reflector sees a slow request rather than an error, so its backoff
// never grows.
package reconnect

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// ProbeInterval is how often a waiting request probes the API server.
const ProbeInterval = 500 * time.Millisecond

// probeTimeout bounds one probe of /readyz.
const probeTimeout = 2 * time.Second

// Wrap makes the informers' lists and watches made with cfg wait for an
// unreachable API server instead of failing.
func Wrap(cfg *rest.Config) {
	cfg.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return &Transport{Next: next, Every: ProbeInterval}
	})
}

// Transport sends lists and watches again once the API server is ready,
// when they fail because it is not; every other request goes through
// unchanged, so that writes, and the reads of leader election, still fail
// and are retried by their callers.
type Transport struct {
	Next  http.RoundTripper
	Every time.Duration
	// waiting counts the requests waiting now, so that an outage is
	// logged once, not by every informer.
	waiting atomic.Int32
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !Waits(req) {
		return t.Next.RoundTrip(req)
	}
	for {
		resp, err := t.Next.RoundTrip(req)
		if req.Context().Err() != nil || !Unavailable(resp, err) {
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		if werr := t.waitReady(req, err, resp); werr != nil {
			if err != nil {
				return nil, err
			}
			return nil, werr
		}
	}
}

// waitReady returns once the API server answers /readyz with 200, or with
// the request's context error.
func (t *Transport) waitReady(req *http.Request, cause error, resp *http.Response) error {
	ctx := req.Context()
	logger := log.FromContext(ctx).WithName("reconnect")
	if t.waiting.Add(1) == 1 {
		why := "unavailable"
		if cause != nil {
			why = cause.Error()
		} else if resp != nil {
			why = resp.Status
		}
		logger.Info("API server unreachable: lists and watches wait for it", "reason", why, "probeEvery", t.Every)
	}
	defer t.waiting.Add(-1)
	start := time.Now()
	probe := readyzURL(req.URL)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(t.Every):
		}
		if t.ready(ctx, probe, req.Header) {
			logger.V(1).Info("API server ready again", "waited", time.Since(start).Round(time.Millisecond))
			return nil
		}
	}
}

// ready probes /readyz once, with the request's credentials.
func (t *Transport) ready(ctx context.Context, probe string, h http.Header) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	preq, err := http.NewRequestWithContext(ctx, http.MethodGet, probe, nil)
	if err != nil {
		return false
	}
	if a := h.Get("Authorization"); a != "" {
		preq.Header.Set("Authorization", a)
	}
	resp, err := t.Next.RoundTrip(preq)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func readyzURL(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/readyz"}).String()
}

// Unavailable tells whether a request failed because the API server is
// away or not ready: no connection, or 502, 503 or 504.
func Unavailable(resp *http.Response, err error) bool {
	if err != nil {
		return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Waits tells whether req is an informer's list or watch: a GET of a
// collection, or any GET with watch=true.
func Waits(req *http.Request) bool {
	if req.Method != http.MethodGet {
		return false
	}
	if w := req.URL.Query().Get("watch"); w == "true" || w == "1" {
		return true
	}
	return isCollection(req.URL.Path)
}

// isCollection tells whether an API path names a collection:
// /api/v1/RESOURCE, /apis/GROUP/VERSION/RESOURCE, or either with
// namespaces/NAMESPACE/ before RESOURCE.
func isCollection(path string) bool {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	var rest []string
	switch {
	case len(seg) >= 3 && seg[0] == "api":
		rest = seg[2:]
	case len(seg) >= 4 && seg[0] == "apis":
		rest = seg[3:]
	default:
		return false
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		rest = rest[2:]
	}
	return len(rest) == 1
}
