package web

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// jobsQuery is the jobs list's filter and order, from the query string of /jobs and
// /api/jobs: state, namespace, sort (submitted, name, state, duration) and order (asc,
// desc). Empty fields mean no filter and the default order, newest first.
type jobsQuery struct {
	State     string
	Namespace string
	Sort      string
	Order     string
}

// The sort keys of the jobs list, and their default orders.
var jobSorts = map[string]string{"submitted": "desc", "name": "asc", "state": "asc", "duration": "desc"}

// parseJobsQuery reads a jobs query; an unknown state, sort or order is an error that
// names it.
func parseJobsQuery(q url.Values) (jobsQuery, error) {
	jq := jobsQuery{State: q.Get("state"), Namespace: q.Get("namespace"), Sort: q.Get("sort"), Order: q.Get("order")}
	if jq.State != "" && !slices.Contains(jobStates, jq.State) {
		return jq, fmt.Errorf("state %q is not one of %s", jq.State, strings.Join(jobStates, ", "))
	}
	if jq.Sort == "" {
		jq.Sort = "submitted"
	}
	def, ok := jobSorts[jq.Sort]
	if !ok {
		return jq, fmt.Errorf("sort %q is not one of submitted, name, state, duration", jq.Sort)
	}
	switch jq.Order {
	case "":
		jq.Order = def
	case "asc", "desc":
	default:
		return jq, fmt.Errorf("order %q is not asc or desc", jq.Order)
	}
	return jq, nil
}

// apply returns the jobs that pass the filter, in the query's order; ties keep the
// newest first.
func (q jobsQuery) apply(jobs []JobView) []JobView {
	out := make([]JobView, 0, len(jobs))
	for _, j := range jobs {
		if (q.State == "" || j.State == q.State) && (q.Namespace == "" || j.Namespace == q.Namespace) {
			out = append(out, j)
		}
	}
	cmp := func(a, b JobView) int {
		switch q.Sort {
		case "name":
			return strings.Compare(a.Name, b.Name)
		case "state":
			return slices.Index(jobStates, a.State) - slices.Index(jobStates, b.State)
		case "duration":
			switch {
			case a.DurationSeconds < b.DurationSeconds:
				return -1
			case a.DurationSeconds > b.DurationSeconds:
				return 1
			}
			return 0
		}
		return timeCmp(a.SubmitTime, b.SubmitTime)
	}
	slices.SortStableFunc(out, func(a, b JobView) int {
		if q.Order == "desc" {
			return cmp(b, a)
		}
		return cmp(a, b)
	})
	return out
}

// values encodes q for a link, leaving out the defaults.
func (q jobsQuery) values() url.Values {
	v := url.Values{}
	if q.State != "" {
		v.Set("state", q.State)
	}
	if q.Namespace != "" {
		v.Set("namespace", q.Namespace)
	}
	if q.Sort != "" && q.Sort != "submitted" {
		v.Set("sort", q.Sort)
	}
	if q.Order != "" && q.Order != jobSorts[q.Sort] {
		v.Set("order", q.Order)
	}
	return v
}

// SortLink is a column heading of the jobs list: a link that sorts by the column, or
// reverses the order when it already does.
type SortLink struct {
	Label string
	Href  string
	// Arrow is "▲" or "▼" on the column the list is sorted by, else "".
	Arrow string
}

// sortLinks returns the sortable column headings for q.
func (q jobsQuery) sortLinks() map[string]SortLink {
	out := map[string]SortLink{}
	for key, label := range map[string]string{"submitted": "Submitted", "name": "Name", "state": "State", "duration": "Duration"} {
		next := q
		next.Sort, next.Order = key, jobSorts[key]
		l := SortLink{Label: label}
		if q.Sort == key {
			l.Arrow = map[string]string{"asc": "▲", "desc": "▼"}[q.Order]
			next.Order = map[string]string{"asc": "desc", "desc": "asc"}[q.Order]
		}
		l.Href = "/jobs"
		if enc := next.values().Encode(); enc != "" {
			l.Href += "?" + enc
		}
		out[key] = l
	}
	return out
}

// jobsPageData is what the jobs page renders.
type jobsPageData struct {
	Jobs   []JobView
	Counts map[string]int
	States []string
	// Namespaces lists every namespace with a job, for the filter.
	Namespaces []string
	Query      jobsQuery
	Sorts      map[string]SortLink
	// Total is the number of jobs before filtering.
	Total int
}

// namespacesOf lists the namespaces of jobs, sorted.
func namespacesOf(jobs []JobView) []string {
	seen := map[string]bool{}
	for _, j := range jobs {
		seen[j.Namespace] = true
	}
	return sortedKeys(seen)
}
