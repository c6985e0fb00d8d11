package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which the status page tests drive; they fail without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the status page tests need a headless chromium and found none on PATH: run `scripts/deps.sh browser`")
	return ""
}

// spArtifacts is where the status page tests save screenshots: $EDDY_TEST_ARTIFACTS, else a
// temporary directory of the test.
func spArtifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDDY_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// spBrowser is one headless chromium (its own profile, so its own cookies) and a tab in it.
type spBrowser struct {
	t    *testing.T
	name string
	ctx  context.Context // the first tab
	pid  int
	arts string
}

// newSPBrowser starts chromium in its own process group; the clean-up ends it and its children
// by that PID's group, even when the test fails.
func newSPBrowser(t *testing.T, exe, name, arts string) *spBrowser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1200),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		}),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &spBrowser{t: t, name: name, ctx: ctx, arts: arts}
	// The first call starts the browser, which lives as long as its context: no timeout on it.
	err := chromedp.Do(ctx)
	if c := chromedp.FromContext(ctx); c != nil && c.Browser != nil && c.Browser.Process() != nil {
		b.pid = c.Browser.Process().Pid
	}
	t.Cleanup(func() {
		cancel()
		acancel()
		if b.pid > 0 {
			_ = syscall.Kill(-b.pid, syscall.SIGKILL) // whatever of its group is left
		}
	})
	if err != nil {
		t.Fatalf("start chromium (%s): %v (is it installed? run `scripts/deps.sh browser`)", exe, err)
	}
	t.Logf("browser %q: chromium pid %d", name, b.pid)
	return b
}

// tab opens another tab in the same browser (same cookies).
func (b *spBrowser) tab() context.Context {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("new tab: %v", err)
	}
	return ctx
}

// run runs actions in tab ctx, bounded.
func (b *spBrowser) run(ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		b.shot(ctx, "failed-"+strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("browser %s: %s: %v", b.name, what, err)
	}
}

// js runs a JavaScript statement in tab ctx, as a step.
func js(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[any](expr)(ctx, t)
		return chromedp.Void{}, err
	}
}

// spEval evaluates a JavaScript expression in tab ctx (awaiting a promise it gives).
func spEval[T any](ctx context.Context, expr string) (T, error) {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(c, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// waitJS polls expr (a boolean) in tab ctx until it is true.
func (b *spBrowser) waitJS(ctx context.Context, what string, d time.Duration, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		ok, err := spEval[bool](ctx, expr)
		if last = err; err == nil && ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.shot(ctx, "timeout-"+strings.ReplaceAll(what, " ", "-"))
	body, _ := spEval[string](ctx, "document.body ? document.body.innerText : ''")
	b.t.Fatalf("browser %s: %s: not after %s (last error %v)\n--- page text ---\n%s", b.name, what, d, last, body)
}

// shot saves a full-page screenshot of tab ctx as <artefacts>/statuspage-<name>.png.
func (b *spBrowser) shot(ctx context.Context, name string) string {
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100)) // 100: PNG (below it, JPEG)
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(b.arts, "statuspage-"+name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.t.Logf("screenshot: %s", p)
	return p
}

// login logs in at the status page base with token and waits for the overview.
func (b *spBrowser) login(ctx context.Context, base, token string) {
	b.t.Helper()
	b.run(ctx, "open the login form", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	b.run(ctx, "log in",
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("nodes-table")))
}

// spGet fetches u with no session and returns the status, the redirect target and the body.
func spGet(t *testing.T, method, u string) (int, string, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(method, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

// jsq quotes s as a JavaScript string.
func jsq(s string) string { return fmt.Sprintf("%q", s) }
