package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a long-running process on a host (Host.Start).
type Process struct {
	name string
	host *Host
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}

	mu     sync.Mutex
	paused bool
	err    error // the exit status, once done is closed
}

func newProcess(name string, h *Host, cmd *exec.Cmd, log *os.File) *Process {
	p := &Process{name: name, host: h, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if log != nil {
			log.Close()
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p
}

// Name is the process's label.
func (p *Process) Name() string { return p.name }

// Host is where the process runs.
func (p *Process) Host() *Host { return p.host }

// Pid is the process ID (the program itself: `ip netns exec` execs it in place).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and its exit error (nil for status 0).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// Paused reports whether Pause stopped the process and Resume has not continued it.
func (p *Process) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// Kill sends SIGKILL (after SIGCONT, so a paused process dies at once) and waits for
// the process to exit. Killing an exited process does nothing.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	p.host.net.cfg.Logf("netns: killed %s on %s", p.name, p.host.name)
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then kills it.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.Kill()
	}
}

// Pause stops the process with SIGSTOP: it keeps its sockets but answers nothing.
func (p *Process) Pause() error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	p.host.net.cfg.Logf("netns: paused %s on %s", p.name, p.host.name)
	return nil
}

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error {
	if err := p.signal(syscall.SIGCONT); err != nil {
		return err
	}
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	p.host.net.cfg.Logf("netns: resumed %s on %s", p.name, p.host.name)
	return nil
}

func (p *Process) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("netns: %s on %s: %w", p.name, p.host.name, errExited)
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("netns: %s on %s: %v: %w", p.name, p.host.name, sig, err)
	}
	return nil
}

var errExited = errors.New("process has exited")
