package controllers

// The manager's defaults for its API client and writes (its flags
// --kube-api-qps, --kube-api-burst and --write-concurrency); the envtest
// suite runs its controller with them too, so that what the fan-out
// measures is what a deployment gets.
const (
	// DefaultKubeAPIQPS is the client's sustained rate of requests.
	DefaultKubeAPIQPS = 200
	// DefaultKubeAPIBurst is how many requests the client sends at once
	// before DefaultKubeAPIQPS applies.
	DefaultKubeAPIBurst = 400
	// DefaultWriteConcurrency is how many writes a resolve has in flight.
	DefaultWriteConcurrency = 16
)
