package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Usage sampling: every heartbeat carries the node's CPU and memory use (/proc/stat,
// /proc/meminfo), the GPUs' (Config.GPUUsage, from NVML) and each running task's.
// Tasks run inside the agent's process (goroutines), so a task's figures are the
// process's (getrusage CPU time, /proc/self/statm resident memory) divided evenly over
// the tasks the process runs, across every agent in it (cohort dev runs several); such
// a share is marked shared_process.

// GPUUsageFunc samples the node's GPUs: memory in use, the busy fraction (negative:
// unknown), and ok false when the node has no GPU data.
type GPUUsageFunc func() (memoryBytes int64, utilization float64, ok bool)

// processAgents are the agents of this process, for splitting the process's usage.
var processAgents = struct {
	sync.Mutex
	m map[*Agent]struct{}
}{m: map[*Agent]struct{}{}}

func (a *Agent) joinProcess() {
	processAgents.Lock()
	defer processAgents.Unlock()
	processAgents.m[a] = struct{}{}
}

func (a *Agent) leaveProcess() {
	processAgents.Lock()
	defer processAgents.Unlock()
	delete(processAgents.m, a)
}

// processTasks counts the running tasks of every agent in this process.
func processTasks() int {
	processAgents.Lock()
	agents := make([]*Agent, 0, len(processAgents.m))
	for a := range processAgents.m {
		agents = append(agents, a)
	}
	processAgents.Unlock()
	n := 0
	for _, a := range agents {
		a.mu.Lock()
		n += len(a.running)
		a.mu.Unlock()
	}
	return n
}

// usageSampler turns cumulative CPU counters into rates between two samples.
type usageSampler struct {
	mu       sync.Mutex
	at       time.Time
	procCPU  time.Duration
	nodeBusy uint64
	nodeAll  uint64
	cpus     int
	gpu      GPUUsageFunc
}

// processCPU is the process's user and system CPU time so far.
func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("agent: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// processRSS is the process's resident memory (/proc/self/statm).
func processRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, fmt.Errorf("agent: read process memory: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("agent: /proc/self/statm: %q has no resident field", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("agent: /proc/self/statm resident: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat: busy and all jiffies,
// and the number of "cpuN" lines.
func parseProcStat(b []byte) (busy, all uint64, cpus int, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	found := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		if f[0] != "cpu" {
			cpus++
			continue
		}
		if len(f) < 5 {
			return 0, 0, 0, fmt.Errorf("agent: /proc/stat: cpu line has %d fields", len(f))
		}
		for i, s := range f[1:] {
			v, perr := strconv.ParseUint(s, 10, 64)
			if perr != nil {
				return 0, 0, 0, fmt.Errorf("agent: /proc/stat: cpu field %d: %w", i+1, perr)
			}
			if i >= 8 { // guest time is already counted in user time
				break
			}
			all += v
			if i != 3 && i != 4 { // idle, iowait
				busy += v
			}
		}
		found = true
	}
	if !found {
		return 0, 0, 0, fmt.Errorf("agent: /proc/stat has no cpu line")
	}
	return busy, all, max(cpus, 1), nil
}

// parseMeminfo returns MemTotal and MemTotal-MemAvailable of /proc/meminfo, in bytes.
func parseMeminfo(b []byte) (total, used int64, err error) {
	var avail int64 = -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, perr := strconv.ParseInt(f[1], 10, 64)
		if perr != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			total = v << 10
		case "MemAvailable:":
			avail = v << 10
		}
	}
	if total <= 0 || avail < 0 {
		return 0, 0, fmt.Errorf("agent: /proc/meminfo lacks MemTotal or MemAvailable")
	}
	return total, max(total-avail, 0), nil
}

// The job of each task is not sent: the coordinator knows it from the allocation.

// sample returns the node's usage and the process's CPU cores and resident memory
// since the previous sample (the first sample has CPU rates of 0).
func (s *usageSampler) sample(now time.Time) (node *cohortv1.Usage, procCores float64, procRSS int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	procCPU, err := processCPU()
	if err != nil {
		return nil, 0, 0, err
	}
	if procRSS, err = processRSS(); err != nil {
		return nil, 0, 0, err
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("agent: read /proc/stat: %w", err)
	}
	busy, all, cpus, err := parseProcStat(stat)
	if err != nil {
		return nil, 0, 0, err
	}
	mi, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("agent: read /proc/meminfo: %w", err)
	}
	total, used, err := parseMeminfo(mi)
	if err != nil {
		return nil, 0, 0, err
	}
	node = &cohortv1.Usage{MemoryBytes: used, MemoryTotalBytes: total, TimeUnixNano: now.UnixNano()}
	if !s.at.IsZero() {
		if d := now.Sub(s.at).Seconds(); d > 0 {
			procCores = (procCPU - s.procCPU).Seconds() / d
		}
		if all > s.nodeAll {
			node.CpuCores = float64(busy-s.nodeBusy) / float64(all-s.nodeAll) * float64(cpus)
		}
	}
	s.at, s.procCPU, s.nodeBusy, s.nodeAll, s.cpus = now, procCPU, busy, all, cpus
	if s.gpu != nil {
		if mem, util, ok := s.gpu(); ok {
			node.GpuPresent, node.GpuMemoryBytes, node.GpuUtilization = true, mem, max(util, 0)
		}
	}
	return node, max(procCores, 0), procRSS, nil
}

// usageState is an agent's usage sampling (usage.go).
type usageState struct {
	sampler     usageSampler
	usageFailed bool
	// droppedInterim counts interim reports dropped on a full queue.
	droppedInterim atomic.Int64
}

// startUsage joins the process's agents and takes the first sample, so that the
// first heartbeat has CPU rates; the returned func leaves.
func (a *Agent) startUsage() func() {
	a.joinProcess()
	a.sampler.gpu = a.cfg.GPUUsage
	_, _, _, _ = a.sampler.sample(time.Now())
	return a.leaveProcess
}

// usage fills a heartbeat with the node's usage and its running tasks' shares. A
// failed sample leaves the heartbeat without usage (logged once).
func (a *Agent) usage(req *cohortv1.HeartbeatRequest, now time.Time) {
	node, cores, rss, err := a.sampler.sample(now)
	if err != nil {
		if !a.usageFailed {
			a.log.Warn("usage not sampled; heartbeats go without it", "err", err)
			a.usageFailed = true
		}
		return
	}
	req.Usage = node
	tasks := processTasks()
	a.mu.Lock()
	ids := make([]string, 0, len(a.running))
	for id := range a.running {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	if tasks == 0 {
		return
	}
	for _, id := range ids {
		req.Tasks = append(req.Tasks, &cohortv1.TaskUsage{AllocationId: id, Usage: &cohortv1.Usage{
			CpuCores: cores / float64(tasks), MemoryBytes: rss / int64(tasks), TimeUnixNano: now.UnixNano(),
			SharedProcess: tasks > 1,
		}})
	}
}

// interimReport queues an interim report without blocking and reports whether r was
// one. A full queue (the coordinator unreachable for a while) drops it: the next one
// supersedes it, and training must never wait for a progress report.
func (a *Agent) interimReport(r *cohortv1.TaskReport) bool {
	if !r.GetInterim() {
		return false
	}
	select {
	case a.reports <- r:
	default:
		a.droppedInterim.Add(1)
	}
	return true
}
