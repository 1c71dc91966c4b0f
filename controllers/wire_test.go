package controllers

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wireBytes counts the bytes of the request bodies the controller's
// manager sends to the API server, by resource and verb, as they go on
// the wire: every create, update, patch and delete, status writes and
// Events included.
var wireBytes sync.Map // "resource/verb" -> *atomic.Int64

// countingTransport adds every write's body to wireBytes.
type countingTransport struct{ next http.RoundTripper }

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if key := writeKey(req.Method, req.URL.Path); key != "" {
		n := req.ContentLength
		if n < 0 && req.Body != nil {
			body, err := io.ReadAll(req.Body)
			_ = req.Body.Close()
			if err != nil {
				return nil, err
			}
			n = int64(len(body))
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		v, _ := wireBytes.LoadOrStore(key, new(atomic.Int64))
		v.(*atomic.Int64).Add(max(n, 0))
	}
	return c.next.RoundTrip(req)
}

// writeKey is "resource/verb" for a write to the API server, e.g.
// "nodefirewallpolicies/status-patch", and "" for a read.
func writeKey(method, path string) string {
	verbs := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}
	verb, ok := verbs[method]
	if !ok {
		return ""
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	// /api/v1/... or /apis/group/version/...
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return "other/" + verb
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	if len(parts) >= 3 {
		return parts[0] + "/" + parts[2] + "-" + verb
	}
	return parts[0] + "/" + verb
}

func wireSnapshot() map[string]int64 {
	out := map[string]int64{}
	wireBytes.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

func TestWriteKey(t *testing.T) {
	for _, tc := range []struct{ method, path, want string }{
		{"PUT", "/apis/firewall.nodefw.io/v1alpha1/nodefirewalls/node-1", "nodefirewalls/update"},
		{"PATCH", "/apis/firewall.nodefw.io/v1alpha1/nodefirewallpolicies/web/status", "nodefirewallpolicies/status-patch"},
		{"POST", "/apis/apps/v1/namespaces/nodefw-system/controllerrevisions", "controllerrevisions/create"},
		{"DELETE", "/apis/apps/v1/namespaces/nodefw-system/controllerrevisions/web-0123456789", "controllerrevisions/delete"},
		{"POST", "/apis/events.k8s.io/v1/namespaces/default/events", "events/create"},
		{"POST", "/api/v1/namespaces", "namespaces/create"},
		{"GET", "/apis/firewall.nodefw.io/v1alpha1/nodefirewalls", ""},
	} {
		if diff := cmp.Diff(tc.want, writeKey(tc.method, tc.path)); diff != "" {
			t.Errorf("writeKey(%s %s) (-want +got):\n%s", tc.method, tc.path, diff)
		}
	}
}

func TestResourceKey(t *testing.T) {
	for _, tc := range []struct{ kind, want string }{
		{"*v1.ControllerRevision/create", "controllerrevisions/create"},
		{"*v1alpha1.NodeFirewallPolicy/status-patch", "nodefirewallpolicies/status-patch"},
		{"*v1alpha1.NodeFirewallAddressSet/update", "nodefirewalladdresssets/update"},
		{"*v1alpha1.NodeFirewall/status-update", "nodefirewalls/status-update"},
	} {
		if diff := cmp.Diff(tc.want, resourceKey(tc.kind)); diff != "" {
			t.Errorf("resourceKey(%s) (-want +got):\n%s", tc.kind, diff)
		}
	}
}
