package multihost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tmpfsDir mounts a tmpfs of size bytes at a new directory under parent (unmounted
// when the test ends) and returns it.
func tmpfsDir(t *testing.T, parent, name string, size int64) string {
	t.Helper()
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "cohort-diskfull", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs at %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file into dir until the file system has no space left, and returns
// its path and size.
func fill(t *testing.T, dir string) (string, int64) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := f.Write(buf)
		n += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			return path, n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// dirUsage is the bytes a directory tree's files hold.
func dirUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCoordinatorDiskFull fills a follower coordinator's data directory (its own
// small tmpfs) while the cluster takes writes. raft-wal preallocates its 64 MiB
// segments (fallocate), so a voter whose current segment has room goes on storing
// appends on a full disk: the test proves it by stopping another voter, so the next
// write commits only with the full one in the quorum. Where the full disk bites is a
// new store (its meta database, a new segment): the voter rebuilt (emptied data directory, --join) on the full disk
// must fail loudly (exit with "no space left on device", never join half-made), and
// join and take appends once space is freed. Throughout, the majority acknowledges
// every write; at the end every acknowledged job is listed exactly once, the three
// Raft logs agree entry for entry and every voter restarts from its data directory
// (the store's integrity check passes).
func TestCoordinatorDiskFull(t *testing.T) {
	dir := t.TempDir()
	c := startCluster(t, dir)
	defer func() {
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "cohort-diskfull-"+time.Now().Format("150405"))
			_ = exec.Command("cp", "-a", dir, keep).Run()
			t.Logf("logs kept in %s", keep)
		}
	}()
	peers, err := c.peersVia(c.addrs, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// co is a follower whose disk fills; other, stopped to put co in every quorum, is
	// the leader, so stopping it makes an election: a new term for co's stable store.
	var co, other *coordinator
	for _, p := range peers {
		if p.Leader {
			other = c.coordinator(p.ID)
		} else if co == nil {
			co = c.coordinator(p.ID)
		}
	}
	var rest, others []string
	for _, o := range c.coords {
		if o != other {
			rest = append(rest, o.grpc)
		}
		if o != co {
			others = append(others, o.grpc)
		}
	}

	// Move the follower's data directory onto a tmpfs with 24 MiB to spare.
	co.proc.Stop(10 * time.Second)
	used := dirUsage(t, co.dataDir)
	mnt := tmpfsDir(t, dir, co.id+"-tmpfs", used+24<<20)
	if out, err := exec.Command("cp", "-a", co.dataDir+"/.", mnt).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", co.dataDir, err, out)
	}
	co.dataDir = mnt
	c.startCoordinator(co)
	c.waitFor("3 voters with a leader after "+co.id+" moved to a tmpfs", 60*time.Second, func() error {
		_, err := c.peersVia(c.addrs, 10*time.Second)
		return err
	})

	acked := map[string]string{}
	submit := func(name, addrs string, timeout time.Duration) error {
		spec, err := c.jobSpec(name)
		if err != nil {
			return err
		}
		r := c.cli(timeout, "job", "submit", spec, "-o", "json", "--address", addrs)
		if r.err != nil {
			return fmt.Errorf("submit %s: %v", name, r.err)
		}
		var out struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal([]byte(lastLine(r.stdout)), &out); err != nil || out.JobID == "" {
			return fmt.Errorf("submit %s output %q: %v", name, r.stdout, err)
		}
		acked[name] = out.JobID
		return nil
	}
	// quorumWithCo stops other, waits for a write through co and the remaining voter
	// to be acknowledged (it commits only once co stored it), and starts other again.
	quorumWithCo := func(name string) {
		t.Helper()
		other.proc.Stop(10 * time.Second)
		c.waitFor("a write committed by a quorum that needs "+co.id, 90*time.Second, func() error {
			return submit(name, strings.Join(rest, ","), 20*time.Second)
		})
		c.startCoordinator(other)
		c.waitFor("3 voters with a leader", 60*time.Second, func() error {
			_, err := c.peersVia(c.addrs, 10*time.Second)
			return err
		})
	}

	filler, n := fill(t, mnt)
	c.netLog.printf("diskfull: %s's data directory full (%d bytes of filler)", co.id, n)
	t.Logf("%s's data directory is full (%d MiB of filler)", co.id, n>>20)
	for i := range 8 {
		if err := submit(fmt.Sprintf("full-%d", i), c.addrs, 60*time.Second); err != nil {
			t.Fatalf("while %s's disk is full (the majority has space): %v", co.id, err)
		}
	}
	quorumWithCo("full-quorum")
	if exited, err := co.proc.Exited(); exited {
		t.Fatalf("%s exited on a full disk although its WAL segment had room: %v\n%s", co.id, err, logTail(co.log, 20))
	}

	// Rebuild co on the full disk: it needs a new store and cannot have one.
	if r := c.cli(30*time.Second, "operator", "raft", "remove-peer", co.id, "--address", strings.Join(others, ",")); r.err != nil {
		// A retry inside the CLI after an attempt that committed but timed out on a
		// loaded host answers "not in the raft configuration": what was asked is done
		// (checked below).
		if !strings.Contains(r.err.Error(), "is not in the raft configuration") {
			t.Fatalf("remove-peer %s: %v", co.id, r.err)
		}
		t.Logf("remove-peer %s: %v", co.id, r.err)
	}
	c.waitFor(co.id+" gone from the Raft configuration", 30*time.Second, func() error {
		r := c.cli(10*time.Second, "operator", "raft", "list-peers", "-o", "json", "--address", strings.Join(others, ","))
		if r.err != nil {
			return r.err
		}
		var ps []peer
		if err := json.Unmarshal([]byte(lastLine(r.stdout)), &ps); err != nil {
			return err
		}
		for _, p := range ps {
			if p.ID == co.id {
				return fmt.Errorf("peers %+v", ps)
			}
		}
		return nil
	})
	co.proc.Stop(10 * time.Second)
	entries, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "filler" {
			if err := os.RemoveAll(filepath.Join(mnt, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.issueCert("coordinator", co.id, co.host.Addr().String(), filepath.Join(mnt, "tls"))
	filler2, n2 := fill(t, filepath.Join(mnt, "tls")) // the segment's 64 MiB were freed
	if err := os.Rename(filler2, filler+"-2"); err != nil {
		t.Fatal(err)
	}
	c.netLog.printf("diskfull: %s rebuilt on a full disk (%d more bytes of filler)", co.id, n2)
	c.startCoordinator(co, "--join", strings.Join(others, ","))
	select {
	case <-co.proc.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("%s rebuilt on a full disk still runs after 60 s: want it to fail loudly\n%s", co.id, logTail(co.log, 20))
	}
	_, exitErr := co.proc.Exited()
	if exitErr == nil {
		t.Fatalf("%s exited with status 0 on a full disk\n%s", co.id, logTail(co.log, 20))
	}
	if line := grepLine(mustRead(t, co.log), "no space left on device"); line == "" {
		t.Fatalf("%s exited (%v) without saying its disk is full:\n%s", co.id, exitErr, logTail(co.log, 20))
	} else {
		t.Logf("%s exited (%v): %s", co.id, exitErr, line)
	}
	if err := submit("rebuild-full", strings.Join(others, ","), 60*time.Second); err != nil {
		t.Fatalf("the two voters left: %v", err)
	}

	// Free the space: the rebuilt voter joins and takes appends.
	for _, f := range []string{filler, filler + "-2"} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	c.netLog.printf("diskfull: %s's filler removed", co.id)
	c.startCoordinator(co, "--join", strings.Join(others, ","))
	c.waitFor("3 voters with a leader after the space was freed", 90*time.Second, func() error {
		_, err := c.peersVia(c.addrs, 10*time.Second)
		return err
	})
	quorumWithCo("after-free")

	// Every acknowledged job is listed exactly once.
	r := c.cli(30*time.Second, "job", "list", "-o", "json", "--address", c.addrs)
	if r.err != nil {
		t.Fatal(r.err)
	}
	var jobs []listedJob
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &jobs); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, j := range jobs {
		seen[j.Name]++
		if id, ok := acked[j.Name]; ok && id != j.ID {
			t.Errorf("job %s listed as %s, acknowledged as %s", j.Name, j.ID, id)
		}
	}
	for name := range acked {
		if seen[name] != 1 {
			t.Errorf("acknowledged job %s listed %d times", name, seen[name])
		}
	}

	// No corruption: the logs agree, and every voter restarts from its data directory.
	agree, err := c.checkLogsAgree()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the 3 Raft logs agree over %d entries", agree)
	for _, o := range c.coords {
		c.startCoordinator(o)
	}
	c.waitFor("3 voters with a leader after a restart of all", 60*time.Second, func() error {
		_, err := c.peersVia(c.addrs, 10*time.Second)
		return err
	})
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
