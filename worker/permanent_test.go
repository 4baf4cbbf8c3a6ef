package worker

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/storage"
)

// TestDataFailuresArePermanent: a job's data that is missing, outside the data roots,
// or without the spec's label fails its task permanently (the coordinator fails the
// job at once); an S3 endpoint that does not answer may pass on a retry.
func TestDataFailuresArePermanent(t *testing.T) {
	repo, _ := filepath.Abs("..")
	sample := "file://" + filepath.Join(repo, "jobs/data/attrition-sample.csv")
	for _, tc := range []struct {
		name      string
		train     string
		label     string
		s3        *storage.S3Config
		permanent bool
		want      string
	}{
		{name: "missing file", train: "file://" + filepath.Join(t.TempDir(), "nope.csv"), label: "Attrition", permanent: true, want: "not found"},
		{name: "outside the data roots", train: "file:///etc/hostname", label: "Attrition", permanent: true, want: "outside the data roots"},
		{name: "label differs in case", train: sample, label: "attrition", permanent: true,
			want: `data.label: column "attrition" not found in the CSV (did you mean "Attrition"?)`},
		{name: "S3 endpoint down", train: "s3://data/hr.csv", label: "Attrition",
			s3: &storage.S3Config{Endpoint: "http://127.0.0.1:1", Bucket: "data", AccessKey: "k", SecretKey: "secretsecret", PathStyle: true}, permanent: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := dataSpec(t, tc.train, "", "")
			spec.Spec.Data.Label = tc.label
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := dataSource{ctx: ctx, s3: tc.s3, roots: testDataRoots()}.loadData(&spec.Spec)
			err = dataFailure(err)
			if err == nil {
				t.Fatal("loading the data succeeded")
			}
			if IsPermanent(err) != tc.permanent {
				t.Fatalf("permanent = %v, want %v: %v", IsPermanent(err), tc.permanent, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}
