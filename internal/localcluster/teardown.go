package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/netnstest"
)

// kernelSettings are the machine-wide sysctls the kubelet sets at start
// (setupKernelTunables); Down puts back what they were before.
var kernelSettings = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// hostPaths are directories outside StateDir and RunDir that the kubelet
// and the CNI plugins create when missing, whatever their configuration
// says: the kubelet's container log links, its device plugin socket's
// directory and libcni's result cache. Down removes them again, deepest
// first, when the cluster created them and they are empty.
var hostPaths = []string{
	"/var/log/containers",
	"/var/lib/kubelet/device-plugins", "/var/lib/kubelet",
	"/var/lib/cni/results", "/var/lib/cni",
}

// deviceManagerSocket is the kubelets' device plugin registration socket,
// at a path the kubelet does not derive from its --root-dir.
const deviceManagerSocket = "/var/lib/kubelet/device-plugins/kubelet.sock"

// hostState is what the machine looked like before the cluster started.
type hostState struct {
	Sysctls map[string]string `json:"sysctls"`
	// Absent lists the hostPaths that did not exist.
	Absent []string `json:"absent"`
}

func hostStatePath() string { return filepath.Join(StateDir, "host-state.json") }

// saveKernelSettings records the machine's state before the kubelets
// change it.
func saveKernelSettings() error {
	st := hostState{Sysctls: map[string]string{}}
	for _, key := range kernelSettings {
		raw, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if err != nil {
			return err
		}
		st.Sysctls[key] = strings.TrimSpace(string(raw))
	}
	for _, p := range hostPaths {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			st.Absent = append(st.Absent, p)
		}
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(hostStatePath(), raw, 0o644)
}

// teardown removes a cluster, running or not, completely: its processes
// (daemons, shims, containers), mounts, network namespaces, cgroups and
// files, and puts back the kernel settings the kubelets changed. It is
// what Down does, and what Up does first.
func teardown(logf func(string, ...any)) error {
	var errs []error
	// The containers runc knows, before their state goes: libcni caches a
	// result per sandbox and interface outside the cluster's directories.
	containers, _ := filepath.Glob(filepath.Join(RunDir, "*", "runc", "*", "*"))
	killed, err := killProcesses()
	if err != nil {
		errs = append(errs, err)
	}
	if killed > 0 {
		logf("stopped %d processes of the local cluster", killed)
	}
	if err := unmountAll(StateDir, RunDir); err != nil {
		errs = append(errs, err)
	}
	if deleted, err := netnstest.DeleteWithPrefix(Prefix); err != nil {
		errs = append(errs, err)
	} else if len(deleted) > 0 {
		logf("deleted the network namespaces %s", strings.Join(deleted, ", "))
	}
	// The machine's LAN port goes with the LAN namespace; this is for a run
	// killed between creating the two. The kernel removes a deleted
	// namespace's devices in the background, so the port may vanish
	// between the check and the delete: gone is fine.
	hostPort := filepath.Join("/sys/class/net", HostInterface)
	if _, err := os.Stat(hostPort); err == nil {
		if err := run("ip", "link", "delete", HostInterface); err != nil {
			if _, serr := os.Stat(hostPort); serr == nil {
				errs = append(errs, err)
			}
		}
	}
	if err := removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	if err := restoreHost(containers); err != nil {
		errs = append(errs, err)
	}
	for _, d := range []string{StateDir, RunDir} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killProcesses kills every process of the cluster and waits until they
// are gone: those in a node's network namespace (the daemons, host-network
// containers, the shims), those in a node's cgroups (containers with a
// network namespace of their own), and those whose arguments name the
// cluster's directories. It returns how many it killed.
func killProcesses() (int, error) {
	netns := map[uint64]bool{}
	entries, _ := os.ReadDir(netnstest.NetnsDir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), Prefix) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(netnstest.NetnsDir, e.Name()), &st); err == nil {
			netns[st.Ino] = true
		}
	}
	self := os.Getpid()
	killed := map[int]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var alive []int
		procs, err := os.ReadDir("/proc")
		if err != nil {
			return len(killed), err
		}
		for _, p := range procs {
			pid, err := strconv.Atoi(p.Name())
			if err != nil || pid == self || pid == 1 {
				continue
			}
			if !ours(pid, netns) || zombie(pid) {
				continue
			}
			alive = append(alive, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed[pid] = true
		}
		if len(alive) == 0 {
			return len(killed), nil
		}
		if time.Now().After(deadline) {
			return len(killed), fmt.Errorf("processes of the local cluster survive SIGKILL: %v", alive)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ours reports whether a process belongs to the cluster.
func ours(pid int, netns map[uint64]bool) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "ns", "net"), &st); err == nil && netns[st.Ino] {
		return true
	}
	if raw, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			// hierarchy-ID:controllers:path
			if parts := strings.SplitN(line, ":", 3); len(parts) == 3 && strings.HasPrefix(parts[2], "/"+Prefix) {
				return true
			}
		}
	}
	if raw, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		// Any mention: "--root-dir /var/lib/..." and "--config=/var/lib/..." alike.
		if strings.Contains(string(raw), StateDir+"/") || strings.Contains(string(raw), RunDir+"/") {
			return true
		}
	}
	return false
}

func within(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }

func zombie(pid int) bool {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true // gone
	}
	s := string(raw)
	// pid (comm) state ...: comm may hold spaces and parentheses.
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}

// unmountAll unmounts every mount under the given directories, deepest
// first: the kubelets' volumes (service account tokens), the containers'
// root filesystems, the pods' network namespaces.
func unmountAll(dirs ...string) error {
	for round := 0; ; round++ {
		raw, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return err
		}
		var points []string
		for _, line := range strings.Split(string(raw), "\n") {
			fields := strings.Fields(line)
			if len(fields) < 5 {
				continue
			}
			mp := unescapeMountPath(fields[4])
			for _, d := range dirs {
				if within(mp, d) {
					points = append(points, mp)
					break
				}
			}
		}
		if len(points) == 0 {
			return nil
		}
		if round == 10 {
			return fmt.Errorf("mounts left under %s: %s", strings.Join(dirs, ", "), strings.Join(points, ", "))
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		for _, mp := range points {
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the cgroups of the nodes (the kubelets'
// cgroupRoots, named after the nodes) from every cgroup v1 hierarchy, and
// from the unified one.
func removeCgroups() error {
	hierarchies, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return err
	}
	var errs []error
	seen := map[string]bool{}
	for _, h := range hierarchies {
		root, err := filepath.EvalSymlinks(filepath.Join("/sys/fs/cgroup", h.Name()))
		if err != nil || seen[root] {
			continue
		}
		seen[root] = true
		tops, err := os.ReadDir(root)
		if err != nil {
			continue
		}
		for _, t := range tops {
			if t.IsDir() && strings.HasPrefix(t.Name(), Prefix) {
				if err := removeCgroupTree(filepath.Join(root, t.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes a cgroup and its children, which rmdir does
// one directory at a time (their files are not real files).
func removeCgroupTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroupTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	// A cgroup whose last task just exited may be busy for a moment.
	for i := 0; ; i++ {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if i == 50 {
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// restoreHost puts back the kernel settings of hostState and removes what
// the cluster left outside its directories: the kubelets' container log
// links, libcni's cached results of the given containers (runc state
// directories, named by container ID) and the host paths it created.
func restoreHost(containers []string) error {
	var errs []error
	var st hostState
	raw, err := os.ReadFile(hostStatePath())
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		errs = append(errs, err)
	default:
		if err := json.Unmarshal(raw, &st); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", hostStatePath(), err))
		}
	}
	for key, value := range st.Sysctls {
		path := filepath.Join("/proc/sys", key)
		if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == value {
			continue
		}
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s: %w", key, err))
		}
	}
	if links, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, l := range links {
			p := filepath.Join("/var/log/containers", l.Name())
			if target, err := os.Readlink(p); err == nil && within(target, StateDir) {
				_ = os.Remove(p)
			}
		}
	}
	// Results are named NETWORK-CONTAINERID-INTERFACE; the loopback
	// network is containerd's own.
	ids := map[string]bool{}
	for _, c := range containers {
		ids[filepath.Base(c)] = true
	}
	if results, err := os.ReadDir("/var/lib/cni/results"); err == nil {
		for _, r := range results {
			name := r.Name()
			mine := strings.HasPrefix(name, cniNetworkName+"-")
			for _, part := range strings.Split(name, "-") {
				mine = mine || ids[part]
			}
			if mine {
				_ = os.Remove(filepath.Join("/var/lib/cni/results", name))
			}
		}
	}
	if slices.Contains(st.Absent, filepath.Dir(deviceManagerSocket)) {
		_ = os.Remove(deviceManagerSocket)
	}
	for _, p := range st.Absent {
		// Only when empty: something else may have started using it.
		_ = unix.Rmdir(p)
	}
	return errors.Join(errs...)
}
