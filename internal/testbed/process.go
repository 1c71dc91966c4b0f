package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is a nodefw binary running as a child process, with its output
// in a log file.
type Process struct {
	Name string
	Log  string
	bin  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartProcess runs bin with args, logging to dir/name.log.
func StartProcess(dir, name, bin string, args ...string) (*Process, error) {
	p := &Process{Name: name, Log: filepath.Join(dir, name+".log"), bin: bin, args: args}
	return p, p.Start()
}

// Start starts the process (again).
func (p *Process) Start() error {
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C of the demo reaches us first and
	// we stop children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return nil
}

// Pid is the process's id while it runs, 0 otherwise.
func (p *Process) Pid() int {
	if !p.Running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process is still alive.
func (p *Process) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL, as `kill -9` would, and waits for the exit.
func (p *Process) Kill() {
	p.signal(syscall.SIGKILL, 0)
}

// Stop sends SIGTERM and waits, then SIGKILL after a grace period.
func (p *Process) Stop() {
	p.signal(syscall.SIGTERM, 10*time.Second)
}

func (p *Process) signal(sig syscall.Signal, grace time.Duration) {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-p.done:
			return
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
		}
	}
	<-p.done
}

// PID is the process's id while it runs, 0 otherwise.
func (p *Process) PID() int {
	if !p.Running() {
		return 0
	}
	return p.cmd.Process.Pid
}
