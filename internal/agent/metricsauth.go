package agent

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long the metrics endpoint trusts an answer of the API server, as
// controller-runtime's filters.WithAuthenticationAndAuthorization does.
const (
	tokenCacheTTL = time.Minute
	allowCacheTTL = 5 * time.Minute
	denyCacheTTL  = 30 * time.Second
	// reviewTimeout bounds one TokenReview or SubjectAccessReview.
	reviewTimeout = 10 * time.Second
	// maxCached bounds each cache; past it the cache starts over.
	maxCached = 1024
)

// MetricsAuthFilter is the metrics endpoint's filter: each scrape's bearer
// token is authenticated with a TokenReview, and its user authorized for
// the request's verb on its path with a SubjectAccessReview, both through
// the API server, answers cached briefly. It does what controller-runtime's
// filters.WithAuthenticationAndAuthorization does with the API server's
// own libraries, which link a CEL interpreter, gRPC and more into the
// agent: they made up a third of its binary, and so of its resident size.
func MetricsAuthFilter(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authenticationclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	authz, err := authorizationclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	a := &metricsAuth{
		authenticate: func(ctx context.Context, token string) (*authenticationv1.TokenReviewStatus, error) {
			tr, err := authn.TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
			if err != nil {
				return nil, err
			}
			return &tr.Status, nil
		},
		authorize: func(ctx context.Context, spec authorizationv1.SubjectAccessReviewSpec) (*authorizationv1.SubjectAccessReviewStatus, error) {
			sar, err := authz.SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
			if err != nil {
				return nil, err
			}
			return &sar.Status, nil
		},
		now: time.Now,
	}
	return a.filter, nil
}

// metricsAuth authenticates and authorizes scrapes through the API server.
type metricsAuth struct {
	authenticate func(context.Context, string) (*authenticationv1.TokenReviewStatus, error)
	authorize    func(context.Context, authorizationv1.SubjectAccessReviewSpec) (*authorizationv1.SubjectAccessReviewStatus, error)
	now          func() time.Time

	mu        sync.Mutex
	users     map[string]cachedUser
	decisions map[string]cachedDecision
}

type cachedUser struct {
	user    *authenticationv1.UserInfo // nil: the token does not authenticate
	expires time.Time
}

type cachedDecision struct {
	allowed bool
	expires time.Time
}

func (a *metricsAuth) filter(log logr.Logger, handler http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), reviewTimeout)
		defer cancel()
		token, ok := bearerToken(req)
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		user, err := a.user(ctx, token)
		if err != nil {
			log.Error(err, "Authentication failed")
			http.Error(w, "Authentication failed", http.StatusInternalServerError)
			return
		}
		if user == nil {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb := strings.ToLower(req.Method)
		allowed, err := a.allowed(ctx, user, verb, req.URL.Path)
		if err != nil {
			msg := fmt.Sprintf("Authorization for user %s failed", user.Username)
			log.Error(err, msg)
			http.Error(w, msg, http.StatusInternalServerError)
			return
		}
		if !allowed {
			http.Error(w, fmt.Sprintf("Authorization denied for user %s", user.Username), http.StatusForbidden)
			return
		}
		handler.ServeHTTP(w, req)
	}), nil
}

// bearerToken is the request's bearer token, if it has one.
func bearerToken(req *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// user is who token authenticates as, or nil when it does not.
func (a *metricsAuth) user(ctx context.Context, token string) (*authenticationv1.UserInfo, error) {
	now := a.now()
	a.mu.Lock()
	c, ok := a.users[token]
	a.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.user, nil
	}
	st, err := a.authenticate(ctx, token)
	if err != nil {
		return nil, err
	}
	var user *authenticationv1.UserInfo
	if st.Authenticated {
		user = st.User.DeepCopy()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.users == nil || len(a.users) >= maxCached {
		a.users = map[string]cachedUser{}
	}
	a.users[token] = cachedUser{user: user, expires: now.Add(tokenCacheTTL)}
	return user, nil
}

// allowed asks whether user may verb path.
func (a *metricsAuth) allowed(ctx context.Context, user *authenticationv1.UserInfo, verb, path string) (bool, error) {
	spec := authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
	}
	if len(user.Extra) > 0 {
		spec.Extra = make(map[string]authorizationv1.ExtraValue, len(user.Extra))
		for k, v := range user.Extra {
			spec.Extra[k] = authorizationv1.ExtraValue(v)
		}
	}
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%s", user.Username, user.UID, strings.Join(user.Groups, ","), verb, path)
	now := a.now()
	a.mu.Lock()
	c, ok := a.decisions[key]
	a.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.allowed, nil
	}
	st, err := a.authorize(ctx, spec)
	if err != nil {
		return false, err
	}
	ttl := denyCacheTTL
	if st.Allowed {
		ttl = allowCacheTTL
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.decisions == nil || len(a.decisions) >= maxCached {
		a.decisions = map[string]cachedDecision{}
	}
	a.decisions[key] = cachedDecision{allowed: st.Allowed, expires: now.Add(ttl)}
	return st.Allowed, nil
}
