package multihost

import (
	"bytes"
	encbin "encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cohort-dev/cohort/internal/netns"
)

// BenchEnv, set to 1, runs TestNetnsCNNThroughput (minutes of training; a benchmark,
// not a check).
const benchEnv = "COHORT_NETNS_BENCH"

// writeSyntheticIDX writes n 28x28 grey-scale images in 10 classes (a bright band
// whose position is the class, on noise) and their labels, in the MNIST idx format,
// as dir/synth-train-images-idx3-ubyte and dir/synth-train-labels-idx1-ubyte. It
// returns the images file.
func writeSyntheticIDX(t *testing.T, dir string, n int) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 22))
	var img, lab bytes.Buffer
	_ = encbin.Write(&img, encbin.BigEndian, []uint32{0x0803, uint32(n), 28, 28})
	_ = encbin.Write(&lab, encbin.BigEndian, []uint32{0x0801, uint32(n)})
	px := make([]byte, 28*28)
	for range n {
		class := rng.IntN(10)
		for i := range px {
			px[i] = byte(rng.IntN(96))
			if row := i / 28; row >= 2+class*2 && row < 5+class*2 {
				px[i] = byte(160 + rng.IntN(96))
			}
		}
		img.Write(px)
		lab.WriteByte(byte(class))
	}
	images := filepath.Join(dir, "synth-train-images-idx3-ubyte")
	if err := os.WriteFile(images, img.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "synth-train-labels-idx1-ubyte"), lab.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return images
}

// cnnSpec is jobs/examples/fashion-cnn.yaml (the same network, batch, optimizer, 2
// sync workers, 2 shards) training on images for many epochs, without validation,
// test, export or checkpoints to pause it; its workers cannot share a node.
func cnnSpec(t *testing.T, name, images string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "jobs/examples/fashion-cnn.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["metadata"].(map[string]any)["name"] = name
	spec := doc["spec"].(map[string]any)
	delete(spec, "export")
	data := spec["data"].(map[string]any)
	data["train"] = "file://" + images
	delete(data, "validation")
	delete(data, "test")
	spec["training"].(map[string]any)["epochs"] = 1000
	spec["resources"] = map[string]any{
		"workers":          map[string]any{"count": 2, "gpus": 0, "cpu": "1500m", "memory": "1Gi"},
		"parameterServers": map[string]any{"shards": 2, "cpu": "250m", "memory": "512Mi"},
	}
	spec["checkpoint"] = map[string]any{"everySteps": 1000000, "keep": 1}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// progressPoint is one progress report of a job's chief.
type progressPoint struct {
	step int64
	at   time.Time
}

// jobProgress reads a job's state and latest progress report.
func (c *cluster) jobProgress(id string) (string, progressPoint, error) {
	var st struct {
		Job struct {
			State    string `json:"state"`
			Progress struct {
				Step string `json:"step"`
				Time string `json:"time_unix_nano"`
			} `json:"progress"`
		} `json:"job"`
	}
	r := c.cli(15*time.Second, "job", "status", id, "-o", "json", "--address", c.addrs)
	if r.err != nil {
		return "", progressPoint{}, r.err
	}
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &st); err != nil {
		return "", progressPoint{}, fmt.Errorf("job status output %q: %w", r.stdout, err)
	}
	var p progressPoint
	var ns int64
	fmt.Sscan(st.Job.Progress.Step, &p.step)
	fmt.Sscan(st.Job.Progress.Time, &ns)
	if ns > 0 {
		p.at = time.Unix(0, ns)
	}
	return st.Job.State, p, nil
}

// samplesPerSecond follows a running job's progress reports for window (after
// settle) and returns its training throughput between the first and the last report
// seen: global steps × batch × workers per second of the chief's own clock.
func (c *cluster) samplesPerSecond(id string, settle, window time.Duration, batch, workers int) (float64, int64, error) {
	begin := time.Now().Add(settle)
	end := begin.Add(window)
	var first, last progressPoint
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for now := range tick.C {
		if now.After(end) {
			break
		}
		state, p, err := c.jobProgress(id)
		if err != nil {
			return 0, 0, err
		}
		if state != "JOB_STATE_RUNNING" {
			return 0, 0, fmt.Errorf("job %s is %s", id, state)
		}
		if now.Before(begin) || p.at.IsZero() || !p.at.After(begin) {
			continue
		}
		if first.at.IsZero() {
			first = p
		}
		last = p
	}
	if !last.at.After(first.at) || last.step <= first.step {
		return 0, 0, fmt.Errorf("job %s: no progress reports %v apart in %v (first %+v, last %+v)", id, time.Second, window, first, last)
	}
	steps := last.step - first.step
	return float64(steps*int64(batch*workers)) / last.at.Sub(first.at).Seconds(), steps, nil
}

// TestNetnsCNNThroughput measures the training throughput of the fashion-cnn
// network (on synthetic 28x28 images in idx format) with 2 sync workers and 2
// parameter-server nodes on separate hosts, first with direct links, then with the
// workers' connections to the parameter servers redirected through a proxy per
// parameter server (on its own host) shaped to 2, 20 and 50 ms round trips and 1
// Gbit/s and 100 Mbit/s per direction (the cap is the parameter-server host's link:
// both workers share it). It writes a markdown table to the log and to
// COHORT_NETNS_BENCH_REPORT when set: per link the median and range of
// COHORT_NETNS_BENCH_ROUNDS (3) windows of COHORT_NETNS_BENCH_WINDOW (10 s), the
// links interleaved round by round. Runs only with COHORT_NETNS_BENCH=1, as root.
func TestNetnsCNNThroughput(t *testing.T) {
	if os.Getenv(benchEnv) != "1" {
		t.Skip(benchEnv + "=1 runs this benchmark (minutes of CNN training on namespaced hosts)")
	}
	window, rounds := 10*time.Second, 3
	if v := os.Getenv("COHORT_NETNS_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		window = d
	}
	if v := os.Getenv("COHORT_NETNS_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("COHORT_NETNS_BENCH_ROUNDS=%q: want a positive count", v)
		}
		rounds = n
	}
	dir := t.TempDir()
	c := startCluster(t, dir)
	defer func() {
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "cohort-netns-bench-"+time.Now().Format("150405"))
			_ = os.Rename(dir, keep)
			t.Logf("logs kept in %s", keep)
		}
	}()
	images := writeSyntheticIDX(t, c.data, 20000)
	px, err := c.net.AddHost("proxy")
	if err != nil {
		t.Fatal(err)
	}
	var workers []*netns.Host
	var proxies []*netns.Proxy
	var targets []netip.AddrPort
	for _, a := range c.agents {
		switch a.role {
		case "worker":
			workers = append(workers, a.host)
		case "paramserver":
			target := netip.MustParseAddrPort(a.host.HostPort(psDataPort))
			p, err := px.StartProxy(netns.ProxyConfig{Target: target.String()})
			if err != nil {
				t.Fatal(err)
			}
			proxies, targets = append(proxies, p), append(targets, target)
		}
	}
	const batch, nworkers = 64, 2
	run := func(name string) string {
		path := filepath.Join(c.dir, "specs", name+".yaml")
		if err := os.WriteFile(path, cnnSpec(t, name, images), 0o644); err != nil {
			t.Fatal(err)
		}
		r := c.cli(30*time.Second, "job", "submit", path, "-o", "json", "--address", c.addrs)
		if r.err != nil {
			t.Fatalf("submit %s: %v\n%s", name, r.err, r.stderr)
		}
		var sub struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal([]byte(lastLine(r.stdout)), &sub); err != nil || sub.JobID == "" {
			t.Fatalf("submit output %q: %v", r.stdout, err)
		}
		c.waitFor(name+" training", 180*time.Second, func() error {
			state, p, err := c.jobProgress(sub.JobID)
			if err != nil {
				return err
			}
			if state != "JOB_STATE_RUNNING" || p.step < 10 {
				return fmt.Errorf("%s at step %d", state, p.step)
			}
			return nil
		})
		return sub.JobID
	}
	// Every link is measured in rounds, interleaved, so a burst of load from elsewhere
	// on the machine lands on one window of each, not on all of one.
	var links []string
	samples := map[string][]float64{}
	measure := func(id, link string) {
		sps, steps, err := c.samplesPerSecond(id, 3*time.Second, window, batch, nworkers)
		if err != nil {
			t.Fatalf("%s: %v", link, err)
		}
		t.Logf("%s: %.0f samples/s (%d steps)", link, sps, steps)
		c.netLog.printf("bench: %s: %.0f samples/s (%d steps)", link, sps, steps)
		if _, ok := samples[link]; !ok {
			links = append(links, link)
		}
		samples[link] = append(samples[link], sps)
	}

	direct := run("cnn-direct")
	for range rounds {
		measure(direct, "direct (no proxy)")
	}
	if r := c.cli(30*time.Second, "job", "cancel", direct, "--address", c.addrs); r.err != nil {
		t.Fatalf("cancel: %v", r.err)
	}
	for i, p := range proxies {
		if _, err := c.net.Redirect(workers, targets[i], p); err != nil {
			t.Fatal(err)
		}
	}
	// New connections only are redirected: restart the worker agents.
	for _, a := range c.agents {
		if a.role == "worker" {
			a.proc.Stop(10 * time.Second)
			c.startAgent(a)
		}
	}
	for _, a := range c.agents {
		c.waitHTTP(a.role+" "+a.id+" /readyz", a.ready, 60*time.Second)
	}
	shaped := run("cnn-shaped")
	for _, p := range proxies {
		if p.Conns() == 0 {
			t.Fatalf("proxy %s saw no connection: the workers do not reach the parameter servers through it", p.Addr())
		}
	}
	for range rounds {
		for _, p := range proxies {
			p.SetShape(netns.Shape{}, netns.Shape{})
		}
		measure(shaped, "proxy, no shaping")
		for _, rtt := range []time.Duration{2 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond} {
			for _, mbit := range []int64{1000, 100} {
				s := netns.Shape{Delay: rtt / 2, Rate: mbit * 1e6 / 8}
				for _, p := range proxies {
					p.SetShape(s, s)
				}
				measure(shaped, fmt.Sprintf("%v round trip, %d Mbit/s", rtt, mbit))
			}
		}
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		if n := len(v); n%2 == 0 {
			return (v[n/2-1] + v[n/2]) / 2
		}
		return v[len(v)/2]
	}
	base := median(samples[links[0]])
	var b strings.Builder
	fmt.Fprintf(&b, "| link between workers and parameter servers | samples/s, median (range) | median against direct |\n|---|---|---|\n")
	for _, l := range links {
		v := samples[l]
		fmt.Fprintf(&b, "| %s | %.0f (%.0f-%.0f) | %.2f |\n", l, median(v), slices.Min(v), slices.Max(v), median(v)/base)
	}
	t.Logf("CNN training throughput, %d rounds of %v windows:\n%s", rounds, window, b.String())
	if path := os.Getenv("COHORT_NETNS_BENCH_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
