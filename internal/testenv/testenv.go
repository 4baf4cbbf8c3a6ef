// Package testenv finds the outside programs some tests compare against or drive:
// Debian's python3 with a module (sklearn, onnx) as an independent reference, and
// headless Chromium for the dashboard. A test calls it first; when the program is
// missing the test is skipped with the install hint, unless the environment variable
// that `make test` sets (COHORT_REQUIRE_SKLEARN, COHORT_REQUIRE_ONNX,
// COHORT_REQUIRE_BROWSER) is 1, when it fails: CI never skips them silently.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is where Debian's chromium package installs the browser.
const ChromiumPath = "/usr/bin/chromium"

// Python returns a python interpreter that imports module, and the module's version:
// $COHORT_PYTHON when set, else the first of python3 on PATH and /usr/bin/python3
// (Debian's, where the python3-<pkg> packages install). Without one the test is
// skipped, or fails when requireEnv is "1"; debPackage names the Debian package in the
// message.
func Python(t testing.TB, module, debPackage, requireEnv string) (path, version string) {
	t.Helper()
	candidates := []string{"python3", "/usr/bin/python3"}
	if py := os.Getenv("COHORT_PYTHON"); py != "" {
		candidates = []string{py}
	}
	var tried []string
	for _, py := range candidates {
		p, err := exec.LookPath(py)
		if err != nil {
			tried = append(tried, py+": not found")
			continue
		}
		out, err := exec.Command(p, "-c", fmt.Sprintf("import %s; print(%s.__version__)", module, module)).CombinedOutput()
		if err == nil {
			return p, strings.TrimSpace(string(out))
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		tried = append(tried, fmt.Sprintf("%s: %s", p, lines[len(lines)-1]))
	}
	msg := fmt.Sprintf("python3 with the %s module not found (%s); install it with scripts/apt-install.sh %s",
		module, strings.Join(tried, "; "), debPackage)
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf("%s=1: %s", requireEnv, msg)
	}
	t.Skip(msg)
	return "", ""
}

// RequireBrowser skips the test when headless Chromium is missing, or fails it when
// COHORT_REQUIRE_BROWSER=1.
func RequireBrowser(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		if os.Getenv("COHORT_REQUIRE_BROWSER") == "1" {
			t.Fatalf("COHORT_REQUIRE_BROWSER=1 but no browser: %v", err)
		}
		t.Skipf("no headless browser at %s (install the Debian package chromium): %v", ChromiumPath, err)
	}
}

// Browser starts headless Chromium for the test (RequireBrowser first) and returns its
// chromedp context; it is closed when the test ends.
func Browser(t testing.TB) context.Context {
	t.Helper()
	RequireBrowser(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ChromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU)
	// The browser lives as long as the context of its first Run: no timeout on it.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", ChromiumPath, err)
	}
	return bctx
}
