package controllers

// The manager's defaults for its API client and writes (its flags
// --kube-api-qps, --kube-api-burst and --write-concurrency); the envtest
// suite runs its controller with them too, so that what the fan-out
// measures is what a deployment gets. A change that touches a thousand
// nodes is a thousand NodeFirewall writes: the burst takes them at once,
// and the writes in flight, not the client's rate, set their pace.
const (
	// DefaultKubeAPIQPS is the client's sustained rate of requests.
	DefaultKubeAPIQPS = 500
	// DefaultKubeAPIBurst is how many requests the client sends at once
	// before DefaultKubeAPIQPS applies.
	DefaultKubeAPIBurst = 1000
	// DefaultWriteConcurrency is how many writes a resolve has in flight.
	DefaultWriteConcurrency = 32
)
