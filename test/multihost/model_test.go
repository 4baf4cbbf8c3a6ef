package multihost

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// TestRegistersModel checks the campaign's model on small histories: the violations it
// must catch (a lost or duplicated acknowledgement, a job visible before its submission,
// a stale quota) and the outcomes it must allow (an unknown submission that happened or
// not, an unknown quota write).
func TestRegistersModel(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	submit := func(name, id string, call, ret float64) func(*history) {
		return func(h *history) {
			h.write(0, opInput{kind: opSubmit, key: "job/" + name}, opOutput{known: id != "", value: id}, at(call), at(ret))
		}
	}
	quota := func(v string, known bool, call, ret float64) func(*history) {
		return func(h *history) {
			h.write(1, opInput{kind: opQuotaSet, key: "quota/q", value: v}, opOutput{known: known}, at(call), at(ret))
		}
	}
	read := func(prefix string, values map[string]string, call, ret float64, final bool) func(*history) {
		return func(h *history) {
			h.read(readOp{client: 2, call: at(call).UnixNano(), ret: at(ret).UnixNano(), prefix: prefix, values: values, finalVerdict: final})
		}
	}
	jobs := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m["job/"+kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name string
		ops  []func(*history)
		want porcupine.CheckResult
	}{
		{"acknowledged and listed", []func(*history){submit("a", "a-1", 1, 2), read("job/", jobs("a", "a-1"), 3, 4, true)}, porcupine.Ok},
		{"listed while the submission is in flight", []func(*history){submit("a", "a-1", 1, 5), read("job/", jobs("a", "a-1"), 2, 3, false), read("job/", jobs("a", "a-1"), 6, 7, true)}, porcupine.Ok},
		{"acknowledged then lost", []func(*history){submit("a", "a-1", 1, 2), read("job/", jobs("a", "a-1"), 3, 4, false), read("job/", jobs(), 5, 6, true)}, porcupine.Illegal},
		{"acknowledged, never listed", []func(*history){submit("a", "a-1", 1, 2), read("job/", jobs(), 30, 31, true)}, porcupine.Illegal},
		{"listed twice", []func(*history){submit("a", "a-1", 1, 2), read("job/", jobs("a", "a-1,a-2"), 3, 4, true)}, porcupine.Illegal},
		{"listed under another ID", []func(*history){submit("a", "a-1", 1, 2), read("job/", jobs("a", "a-9"), 3, 4, true)}, porcupine.Illegal},
		{"listed before its submission", []func(*history){read("job/", jobs("a", "a-1"), 1, 2, false), submit("a", "a-1", 3, 4), read("job/", jobs("a", "a-1"), 5, 6, true)}, porcupine.Illegal},
		{"unknown outcome, absent", []func(*history){submit("a", "", 1, 2), read("job/", jobs(), 3, 4, true)}, porcupine.Ok},
		{"unknown outcome, present", []func(*history){submit("a", "", 1, 2), read("job/", jobs("a", "a-7"), 3, 4, true)}, porcupine.Ok},
		{"unknown outcome, present then gone", []func(*history){submit("a", "", 1, 2), read("job/", jobs("a", "a-7"), 3, 4, false), read("job/", jobs(), 5, 6, true)}, porcupine.Illegal},
		{"unknown outcome, ID changes", []func(*history){submit("a", "", 1, 2), read("job/", jobs("a", "a-7"), 3, 4, false), read("job/", jobs("a", "a-8"), 5, 6, true)}, porcupine.Illegal},
		{"quota read after write", []func(*history){quota("5000", true, 1, 2), quota("6000", true, 3, 4), read("quota/", map[string]string{"quota/q": "6000"}, 5, 6, true)}, porcupine.Ok},
		{"stale quota read", []func(*history){quota("5000", true, 1, 2), quota("6000", true, 3, 4), read("quota/", map[string]string{"quota/q": "5000"}, 5, 6, true)}, porcupine.Illegal},
		{"unknown quota write may apply late", []func(*history){quota("5000", true, 1, 2), quota("6000", false, 3, 4), read("quota/", map[string]string{"quota/q": "5000"}, 5, 6, false), read("quota/", map[string]string{"quota/q": "6000"}, 7, 8, true)}, porcupine.Ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h history
			for _, op := range tc.ops {
				op(&h)
			}
			if got := porcupine.CheckOperationsTimeout(registersModel, h.operations(), 10*time.Second); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
