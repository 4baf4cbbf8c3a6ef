package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cohort-dev/cohort/internal/testenv"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestWebDashboardLiveCurve opens a training job's page in headless Chromium while a
// dev cluster trains it, and checks that the loss curve, fed by server-sent events,
// draws points and then gains more.
func TestWebDashboardLiveCurve(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	testenv.RequireBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t)})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := cohortv1.NewJobServiceClient(conn)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{
		SpecYaml: exampleSpec(t, "epochs: 30", "epochs: 200"), IdempotencyKey: newIdempotencyKey(),
	})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	id := resp.GetJob().GetId()
	t.Cleanup(func() {
		// Stop training before the cluster closes; the job is far from done.
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_, _ = client.CancelJob(cctx, &cohortv1.CancelJobRequest{Id: id, Reason: "test over"})
	})

	// The JSON APIs read the cluster through the gRPC adapter.
	var peers struct {
		Peers []struct {
			ID     string `json:"id"`
			Leader bool   `json:"leader"`
		} `json:"peers"`
	}
	getJSON(t, "http://"+c.HTTPAddr+"/api/peers", &peers)
	if len(peers.Peers) != 1 || peers.Peers[0].ID != "dev-coordinator" || !peers.Peers[0].Leader {
		t.Errorf("/api/peers = %+v, want the dev coordinator as leader", peers.Peers)
	}
	var nodes struct {
		Nodes []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"nodes"`
	}
	getJSON(t, "http://"+c.HTTPAddr+"/api/nodes", &nodes)
	if len(nodes.Nodes) != 4 || nodes.Nodes[0].Status != "ready" {
		t.Errorf("/api/nodes = %+v, want 4 ready nodes", nodes.Nodes)
	}

	bctx := testenv.Browser(t)

	url := "http://" + c.HTTPAddr + "/jobs/" + id
	if err := chromedp.Do(bctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS("#loss-chart")),
	); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	points := func(atLeast int) int {
		t.Helper()
		// data-points is the point count of the longest series the page drew.
		expr := `(() => { const n = Number(document.querySelector("#loss-chart").dataset.points);` +
			` return n >= ` + strconv.Itoa(atLeast) + ` ? n : false; })()`
		n, err := chromedp.Run(bctx, chromedp.Poll[int](expr,
			chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
		if err != nil {
			if errors.Is(err, chromedp.ErrPollingTimeout) {
				j, _ := client.GetJob(context.Background(), &cohortv1.GetJobRequest{Id: id})
				t.Fatalf("the loss curve never reached %d points; job: %v", atLeast, j.GetJob().GetProgress())
			}
			t.Fatalf("poll the loss curve: %v", err)
		}
		return n
	}
	first := points(2)
	later := points(first + 1)
	t.Logf("loss curve: %d points, then %d", first, later)

	// The polyline matches the count: one "x,y" pair per point, none NaN.
	pairs, err := chromedp.Run(bctx, chromedp.Evaluate[int](
		`document.querySelector('#loss-chart polyline[data-series="loss"]').getAttribute("points").split(" ").filter((p) => /^[0-9.]+,[0-9.]+$/.test(p)).length`))
	if err != nil {
		t.Fatalf("read the polyline: %v", err)
	}
	if pairs < later {
		t.Errorf("polyline has %d valid points, the chart counts %d or more", pairs, later)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
