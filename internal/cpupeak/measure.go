package cpupeak

import (
	"errors"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Measure runs a loop of independent float32 FMAs at the widest vector width the CPU
// has on one locked thread for about d of that thread's CPU time, and returns the
// GFLOP/s it reached per second of CPU time: the core's peak at the clock it actually
// runs (boost included), which the nominal cpuinfo clock may understate. Counting the
// thread's CPU time rather than wall time keeps other processes on the machine out of
// the figure (time a hypervisor steals from the virtual CPU still counts).
func Measure(d time.Duration) (float64, error) {
	loop, flops := fmaLoop()
	if loop == nil {
		return 0, errors.New("cpupeak: no vector FMA on this CPU")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	loop(1 << 16) // warm up the vector units (and the clock)
	start, err := threadCPU()
	if err != nil {
		return 0, err
	}
	const chunk = 1 << 18
	iters, used := 0, time.Duration(0)
	for used < d {
		loop(chunk)
		iters += chunk
		now, err := threadCPU()
		if err != nil {
			return 0, err
		}
		used = now - start
	}
	return flops * float64(iters) / used.Seconds() / 1e9, nil
}

// threadCPU is the calling thread's CPU time.
func threadCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
