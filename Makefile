# nodefw Makefile. `make help` lists the targets.

IMG_MANAGER ?= ghcr.io/nodefw/nodefw-manager:latest
IMG_AGENT ?= ghcr.io/nodefw/nodefw-agent:latest
CONTAINER_TOOL ?= docker
KUBECTL ?= kubectl

CONTROLLER_GEN_VERSION ?= v0.23.0
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen

GO_TEST_FLAGS ?= -count=1 -timeout 40m
# Packages that send real packets through network namespaces run one at a
# time, so that timing-sensitive probes never compete with each other. The
# real-cluster suite (test/cluster) runs last, on its own (`make e2e-cluster`
# runs only it).
NETWORK_PKGS = ./internal/nft/... ./internal/netnstest/... $$(go list ./test/... | grep -v /test/cluster)

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC roles from the code's markers.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths="./controllers/..." output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=agent-role paths="./internal/agent/..." output:rbac:artifacts:config=config/agent/rbac
	@mv config/agent/rbac/role.yaml config/agent/rbac/agent_role.yaml
	@hack/sync-chart.sh

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when generated files are stale.
	@git diff --exit-code -- api config charts || { echo "generated files are stale: run 'make manifests generate' and commit"; exit 1; }

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: deps
deps: ## Install nftables, iptables and ipset when missing (Debian).
	@hack/install-deps.sh

.PHONY: envtest
envtest: ## Build kube-apiserver and etcd for envtest (cached under bin/k8s).
	@hack/envtest-assets.sh >/dev/null

.PHONY: test
test: deps manifests generate vet envtest cluster-tools ## Run unit, envtest, privileged, e2e and real-cluster tests (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v -e /test/ -e /internal/nft -e /internal/netnstest)
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" go test $(GO_TEST_FLAGS) -p 1 $(NETWORK_PKGS)
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" go test $(GO_TEST_FLAGS) ./test/cluster/

# The soak: random changes and faults for SOAK_DURATION, invariants
# checked throughout (`make test` runs it for three minutes).
SOAK_DURATION ?= 30m

.PHONY: soak
soak: deps envtest ## Soak nodefw under random changes and faults for SOAK_DURATION (default 30m), checking invariants (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" NODEFW_SOAK_DURATION=$(SOAK_DURATION) go test -count=1 -v -timeout 0 -run '^TestSoak$$' ./test/soak/

# The API server outage fault test at five minutes; the fault suite in
# `make test` runs it at one.
.PHONY: faults-long-outage
faults-long-outage: deps envtest ## Run the API server outage fault test with a five-minute outage (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" NODEFW_FAULTS_OUTAGE=5m go test -count=1 -v -timeout 30m -run '^TestAPIServerOutage$$' ./test/faults/

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME executions (default 20000x; a duration such as 30s also works).
	@hack/fuzz.sh $${FUZZTIME:-20000x}

.PHONY: bench
bench: deps envtest ## Benchmark the packet path, programming, memory, the resolver, the fan-out and a 5,000-node cluster (root); BENCH_OUT=file also writes the report.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" NODEFW_FANOUT_NODES=2000 NODEFW_SETFANOUT_NODES=1000 NODEFW_SETFANOUT_ENTRIES=100000 go test -count=1 -timeout 45m -v -run '^(TestFanOut|TestSetFanOut)$$' ./controllers/ | tee $(LOCALBIN)/fanout.log
	# Rules through the API server to one node's agent binary, at 10,000 and 50,000.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" NODEFW_SCALE_RULES=10000 go test -count=1 -timeout 30m -v -run '^TestRulesThroughTheAPI$$' ./test/agent/ | grep '^SCALE ' | tee $(LOCALBIN)/scale.log
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" NODEFW_SCALE_RULES=50000 go test -count=1 -timeout 30m -v -run '^TestRulesThroughTheAPI$$' ./test/agent/ | grep '^SCALE ' | tee -a $(LOCALBIN)/scale.log
	# The manager process on 5,000 nodes and 1,000 policies.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" NODEFW_FLEET_NODES=5000 NODEFW_FLEET_POLICIES=1000 go test -count=1 -timeout 60m -v -run '^TestLargeCluster$$' ./test/fleet/ | tee $(LOCALBIN)/fleet.log
	go test -count=1 -timeout 90m -v -run '^TestBenchmarks$$' ./test/bench -args -full -fanout $(LOCALBIN)/fanout.log -scale $(LOCALBIN)/scale.log -fleet $(LOCALBIN)/fleet.log $(if $(BENCH_OUT),-out $(abspath $(BENCH_OUT)))

##@ Build

.PHONY: build
build: ## Build bin/manager, bin/agent and bin/nodefw.
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/agent ./cmd/agent
	go build -o $(LOCALBIN)/nodefw ./cmd/nodefw

.PHONY: run
run: manifests generate ## Run the controller against the cluster in ~/.kube/config.
	go run ./cmd/manager --health-probe-bind-address=0

.PHONY: demo
demo: deps build envtest cluster-tools ## Run the whole job locally: control plane, three namespace nodes with agents, kube-proxy and flannel, probes (root).
	go build -o $(LOCALBIN)/demo ./cmd/demo
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" exec $(LOCALBIN)/demo --bin-dir $(LOCALBIN) --cluster-bin-dir $(LOCALBIN)/cluster/bin $(DEMO_FLAGS)

.PHONY: e2e
e2e: deps envtest ## Run the end-to-end suite: real packets through the sample policies (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" go test -count=1 -v -timeout 15m ./test/e2e/

.PHONY: cluster-tools
cluster-tools: deps envtest ## Build the local cluster's kubelet, kube-proxy, flannel, containerd and CNI plugins (cached under bin/cluster).
	@hack/cluster/build.sh

.PHONY: cluster
cluster: cluster-tools ## Start a local cluster: control plane, two kubelet nodes in network namespaces, nodefw deployed (root).
	go build -o $(LOCALBIN)/cluster/cluster ./hack/cluster
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" $(LOCALBIN)/cluster/cluster --repo-root $(CURDIR) up

.PHONY: cluster-down
cluster-down: ## Remove the local cluster and everything it left on the machine (root).
	go build -o $(LOCALBIN)/cluster/cluster ./hack/cluster
	$(LOCALBIN)/cluster/cluster down

.PHONY: e2e-cluster
e2e-cluster: cluster-tools ## Run the real-cluster suite: nodefw from config/default and the Helm chart on a local cluster (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" go test -count=1 -v -timeout 20m ./test/cluster/

.PHONY: docker-build
docker-build: ## Build the manager and agent images.
	$(CONTAINER_TOOL) build -t $(IMG_MANAGER) --build-arg BINARY=manager .
	$(CONTAINER_TOOL) build -t $(IMG_AGENT) --build-arg BINARY=agent .

##@ Deployment

.PHONY: install
install: manifests ## Install the CRDs into the current cluster.
	$(KUBECTL) apply --server-side -k config/crd

.PHONY: uninstall
uninstall: manifests ## Remove the CRDs from the current cluster.
	$(KUBECTL) delete --ignore-not-found -k config/crd

.PHONY: deploy
deploy: manifests ## Deploy nodefw (CRDs, controller, agent, NodeFirewallConfig) to the current cluster.
	$(KUBECTL) apply --server-side -k config/crd
	$(KUBECTL) wait --for condition=established --timeout=60s -f config/crd/bases
	$(KUBECTL) apply --server-side -k config/default

.PHONY: undeploy
undeploy: ## Remove nodefw from the current cluster: policies first, so each agent removes its table.
	-$(KUBECTL) delete nodefirewallpolicies --all --wait=true
	-$(KUBECTL) -n nodefw-system scale deployment nodefw-controller-manager --replicas=0
	-$(KUBECTL) -n nodefw-system wait --for=delete pod -l app.kubernetes.io/component=controller-manager --timeout=60s
	-$(KUBECTL) delete nodefirewalls --all --wait=true --timeout=120s
	@# The NodeFirewallConfig before the CRDs: in one `delete -k config/default`
	@# kubectl may look its kind up only after deleting the CRDs, and fail.
	-$(KUBECTL) delete --ignore-not-found -k config/nodefirewallconfig
	$(KUBECTL) delete --ignore-not-found -k config/default/prefixed

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into bin/.
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
