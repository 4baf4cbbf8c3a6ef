package tfevents_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/cohort-dev/cohort/internal/tfevents"
)

func Example() {
	clock := func() time.Time { return time.Unix(1_700_000_000, 0) }
	var buf bytes.Buffer
	w, err := tfevents.NewWriter(&buf, clock)
	if err != nil {
		panic(err)
	}
	for epoch, loss := range []float64{0.69, 0.52, 0.47} {
		if err := w.Scalar("val_loss", int64(epoch+1), loss); err != nil {
			panic(err)
		}
	}
	if err := w.Flush(); err != nil {
		panic(err)
	}
	// buf now holds a complete event file: store it as
	// jobs/<id>/tensorboard/<FileName(...)> with Blob.Put.
	fmt.Println(tfevents.FileName(clock(), "worker-0"))

	events, err := tfevents.ReadEvents(&buf)
	if err != nil {
		panic(err)
	}
	for _, ev := range events {
		if ev.FileVersion != "" {
			fmt.Println("version", ev.FileVersion)
			continue
		}
		fmt.Printf("step %d val_loss %.2f\n", ev.Step, ev.Scalars["val_loss"])
	}
	// Output:
	// events.out.tfevents.1700000000.worker-0
	// version brain.Event:2
	// step 1 val_loss 0.69
	// step 2 val_loss 0.52
	// step 3 val_loss 0.47
}
