package localcluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startDaemon starts bin with args in the network namespace of node (with
// nsenter, in the machine's other namespaces), as a daemon of its own: a
// new session, not a child the caller must wait for, so that it outlives
// `make cluster`. Its output goes to logs/NAME.log under StateDir. Down
// finds it again by its namespace and its arguments.
func startDaemon(node, name string, env []string, bin string, args ...string) error {
	logPath := filepath.Join(logDir(), name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command("nsenter", append([]string{"--net=" + filepath.Join("/run/netns", node), "--", bin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	// Reap it if it dies while this process lives; otherwise init does.
	go func() { _ = cmd.Wait() }()
	return nil
}

// LogPath is the log file of a daemon of the cluster, e.g.
// "nfwc-worker-kubelet".
func LogPath(name string) string { return filepath.Join(logDir(), name+".log") }

// LogTail returns the last lines of a daemon's log.
func LogTail(name string, lines int) string {
	raw, err := os.ReadFile(LogPath(name))
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// logTails returns the last lines of every daemon's log.
func logTails(lines int) string {
	logs, _ := filepath.Glob(LogPath("*"))
	var b strings.Builder
	for _, l := range logs {
		name := strings.TrimSuffix(filepath.Base(l), ".log")
		fmt.Fprintf(&b, "--- %s\n%s\n", name, LogTail(name, lines))
	}
	return b.String()
}

// FindProcess returns the PID of the one live process whose argv[0] is
// argv0 and whose environment holds env ("NAME=value"), such as a
// container's process: "/agent" with "NODE_NAME=nfwc-worker", or a pod's
// with "HOSTNAME=" and the pod's name.
func FindProcess(argv0, env string) (int, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var found []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || zombie(pid) {
			continue
		}
		dir := filepath.Join("/proc", p.Name())
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || strings.SplitN(string(cmdline), "\x00", 2)[0] != argv0 {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(environ), "\x00"), env) {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%d processes %s with %s, want 1: %v", len(found), argv0, env, found)
	}
	return found[0], nil
}

// InNetns runs fn on an OS thread in the network namespace at path (a
// node's, or /proc/PID/ns/net for a pod's); sockets fn opens stay there.
func InNetns(path string, fn func() error) error { return inNetns(path, fn) }
