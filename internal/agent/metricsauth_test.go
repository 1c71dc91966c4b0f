package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
)

func TestMetricsAuth(t *testing.T) {
	reviews, sars := 0, []authorizationv1.SubjectAccessReviewSpec{}
	now := time.Unix(1000, 0)
	a := &metricsAuth{
		authenticate: func(_ context.Context, token string) (*authenticationv1.TokenReviewStatus, error) {
			reviews++
			switch token {
			case "reader", "stranger":
				return &authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{
					Username: "system:serviceaccount:ns:" + token, UID: "u-" + token, Groups: []string{"system:serviceaccounts"},
					Extra: map[string]authenticationv1.ExtraValue{"k": {"v"}}}}, nil
			case "broken":
				return nil, errors.New("the API server is away")
			}
			return &authenticationv1.TokenReviewStatus{Error: "invalid token"}, nil
		},
		authorize: func(_ context.Context, spec authorizationv1.SubjectAccessReviewSpec) (*authorizationv1.SubjectAccessReviewStatus, error) {
			sars = append(sars, spec)
			return &authorizationv1.SubjectAccessReviewStatus{Allowed: spec.User == "system:serviceaccount:ns:reader"}, nil
		},
		now: func() time.Time { return now },
	}
	h, err := a.filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("metrics")) }))
	if err != nil {
		t.Fatal(err)
	}
	get := func(auth string) int {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"not a bearer token", "Basic cmVhZGVyOng=", http.StatusUnauthorized},
		{"a token that does not authenticate", "Bearer nobody", http.StatusUnauthorized},
		{"the TokenReview fails", "Bearer broken", http.StatusInternalServerError},
		{"a user without the role", "Bearer stranger", http.StatusForbidden},
		{"a user with the role", "Bearer reader", http.StatusOK},
	} {
		if got := get(tc.auth); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	want := authorizationv1.SubjectAccessReviewSpec{
		User: "system:serviceaccount:ns:reader", UID: "u-reader", Groups: []string{"system:serviceaccounts"},
		Extra:                 map[string]authorizationv1.ExtraValue{"k": {"v"}},
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
	}
	if diff := cmp.Diff(want, sars[len(sars)-1]); diff != "" {
		t.Errorf("SubjectAccessReview (-want +got):\n%s", diff)
	}

	// Answers are reused until they expire.
	reviews, sars = 0, nil
	get("Bearer reader")
	get("Bearer stranger")
	if reviews != 0 || len(sars) != 0 {
		t.Errorf("cached answers: %d TokenReviews and %d SubjectAccessReviews, want none", reviews, len(sars))
	}
	now = now.Add(denyCacheTTL + time.Second)
	get("Bearer stranger")
	if len(sars) != 1 {
		t.Errorf("a denial past %v: %d SubjectAccessReviews, want 1", denyCacheTTL, len(sars))
	}
	now = now.Add(tokenCacheTTL)
	get("Bearer reader")
	if reviews != 1 {
		t.Errorf("tokens past %v: %d TokenReviews, want 1", tokenCacheTTL, reviews)
	}
}
