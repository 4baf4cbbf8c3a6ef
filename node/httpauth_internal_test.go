package node

import (
	"net/http/httptest"
	"testing"
)

// TestCrossSite: a state-changing request that a browser marks as coming from another
// site (Sec-Fetch-Site, or an Origin other than the host) is refused even with a
// client certificate, which browsers present on their own; reads and same-origin
// requests pass.
func TestCrossSite(t *testing.T) {
	for _, tc := range []struct {
		method, site, origin string
		refused              bool
	}{
		{"GET", "cross-site", "https://evil.example", false},
		{"HEAD", "cross-site", "", false},
		{"POST", "", "", false},
		{"POST", "same-origin", "https://dash.example:7071", false},
		{"POST", "none", "", false},
		{"POST", "cross-site", "", true},
		{"POST", "same-site", "", true},
		{"DELETE", "", "https://evil.example", true},
		{"PUT", "same-origin", "http://dash.example:7071", true}, // a plain-HTTP origin
	} {
		r := httptest.NewRequest(tc.method, "https://dash.example:7071/api/jobs", nil)
		if tc.site != "" {
			r.Header.Set("Sec-Fetch-Site", tc.site)
		}
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if why := crossSite(r); (why != "") != tc.refused {
			t.Errorf("%s Sec-Fetch-Site %q Origin %q: %q, want refused %v", tc.method, tc.site, tc.origin, why, tc.refused)
		}
	}
}
