package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/eddy-cluster/eddy/api"
)

// The status page in a real browser: a three-daemon cluster with the page on the scheduler
// (and, for the viewer, on a joined node); the admin logs in and sees the three nodes and the
// scheduler group (one member, the leader), which nodes hold a file (the scheduler's answer), a task
// submitted with the CLI goes from queued to completed on the page without a reload while its
// page follows its log; a viewer cannot kill a long task (no button, and the server answers 403
// to the browser's own POST), the admin kills it from its page. Nothing is served without a
// session. Screenshots of each page are saved ($EDDY_TEST_ARTIFACTS, else a temporary
// directory; EDDY_UPDATE_DOCS=1 also copies the overview to docs/status-page.png).
func TestStatusPageCluster(t *testing.T) {
	exe := chromiumPath(t)
	if skipReason != "" {
		t.Fatalf("the status page test runs a FUSE cluster: %s", skipReason)
	}
	arts := spArtifacts(t)
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // tasks run as nobody
	}
	origin := filepath.Join(base, "sp-origin")
	if err := os.MkdirAll(filepath.Join(origin, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(origin, 0o777)
	writeRandom(t, filepath.Join(origin, "data", "sp.bin"), 4<<20, 7)
	const adminToken, viewerToken = "sp-admin-secret", "sp-viewer-secret"
	tokenFile, viewerFile := filepath.Join(base, "sp-token"), filepath.Join(base, "sp-viewer")
	os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600)
	os.WriteFile(viewerFile, []byte(viewerToken+"\n"), 0o600)

	addrs := []string{freeAddr(t, "127.0.0.41"), freeAddr(t, "127.0.0.42"), freeAddr(t, "127.0.0.43")}
	uiAdmin, uiViewer := freeAddr(t, "127.0.0.41"), freeAddr(t, "127.0.0.42")
	var nodes []*node
	for i := range 3 {
		a := []string{"--node-name", fmt.Sprintf("sp%d", i), "--listen", addrs[i], "--token-file", tokenFile, "--ui-sample-interval", "1s"}
		switch i {
		case 0:
			a = append(a, "--scheduler", "--ui-listen", uiAdmin, "--ui-viewer-token-file", viewerFile)
		case 1:
			a = append(a, "--join", addrs[0], "--ui-listen", uiViewer, "--ui-viewer-token-file", viewerFile)
		default:
			a = append(a, "--join", addrs[0])
		}
		n := newNodeAt(t, filepath.Join(base, fmt.Sprintf("sp-n%d", i)), origin)
		n.start(a...)
		nodes = append(nodes, n)
	}
	ctx := context.Background()
	cl := api.NewTCP(addrs[0], api.WithToken(adminToken), api.WithTimeout(10*time.Second))
	logs := func() string { return "--- scheduler log ---\n" + nodes[0].tail(60) }
	var sp1 api.NodeStatus
	waitUntil(t, "three nodes up", 30*time.Second, func() bool {
		ns, err := cl.Nodes(ctx)
		up := 0
		for _, n := range ns {
			if n.Up {
				up++
			}
			if n.Name == "sp1" {
				sp1 = n
			}
		}
		return err == nil && up == 3
	}, logs)
	if out, err := nodes[2].eddy("cache", "warm", nodes[2].mnt("data/sp.bin")); err != nil {
		t.Fatalf("warm: %v %s", err, out)
	}

	// Without a session nothing is served, over plain HTTP, whatever the route.
	adminURL, viewerURL := "http://"+uiAdmin, "http://"+uiViewer
	for _, p := range []string{"/", "/task/x", "/api/overview", "/api/task/x", "/api/task/x/log", "/api/where?path=data",
		"/api/samples", "/chart/cache.svg", "/chart/queue.svg", "/chart/running.svg", "/static/app.js", "/static/style.css"} {
		for _, m := range []string{"GET", "POST"} {
			code, loc, body := spGet(t, m, adminURL+p)
			if !(code == 401 || (code == 303 && loc == "/login" && m == "GET")) {
				t.Errorf("%s %s without a session: %d %q", m, p, code, loc)
			}
			for _, leak := range []string{"sp0", "sp1", "sp2", "<svg", "{"} {
				if strings.Contains(body, leak) {
					t.Errorf("%s %s without a session: body has %q", m, p, leak)
				}
			}
		}
	}

	// The admin logs in and sees the three nodes up.
	admin := newSPBrowser(t, exe, "admin", arts)
	ov := admin.ctx
	admin.run(ov, "open the page", chromedp.Navigate(adminURL+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	admin.shot(ov, "login")
	admin.login(ov, adminURL, adminToken)
	admin.waitJS(ov, "three nodes up", 20*time.Second, `document.querySelectorAll('#nodes-table tr[data-up="1"]').length === 3`)
	admin.waitJS(ov, "the cluster header", 10*time.Second, `document.getElementById('c-scheduler').textContent === `+jsq(addrs[0])+
		` && document.getElementById('c-uptime').textContent !== '…'`)
	// The scheduler group: a group of one, sp0, its leader.
	admin.waitJS(ov, "the scheduler group: one member, the leader", 10*time.Second,
		`(() => { const rows = document.querySelectorAll('#raft-table tr[data-member]'); return rows.length === 1 && rows[0].dataset.member === 'sp0' && rows[0].dataset.leader === '1' && rows[0].cells[1].textContent === 'leader' && document.getElementById('c-raft').textContent.includes('1 member, leader sp0'); })()`)
	// The page must not reload from here on: this mark would be gone.
	admin.run(ov, "mark the page", js(`window.__spMark = 42`))

	// Which nodes hold data/sp.bin: sp2 (warmed above) all of it.
	admin.run(ov, "look up data/sp.bin",
		chromedp.SendKeys(chromedp.ID("where-path"), "data/sp.bin"),
		chromedp.Click(chromedp.ID("where-go")))
	// The answer comes from the inventories the nodes send with their heartbeats, so it may
	// lag the warm by a heartbeat or two: the lookup is asked again until it shows.
	admin.waitJS(ov, "sp2 holding data/sp.bin", 30*time.Second,
		`(() => { const r = document.querySelector('#where-table tr[data-node="sp2"]'); if (!!r && r.cells[1].textContent === '1' && r.cells[2].textContent === '4.0 MiB') return true; window.__whereTries = (window.__whereTries || 0) + 1; if (window.__whereTries % 10 === 0) document.getElementById('where-go').click(); return false; })()`)

	// A long task takes all of sp1's cores; the CLI submits one more for sp1, which queues.
	cores := fmt.Sprint(sp1.Total.Cores)
	blocker, err := cl.SubmitTask(ctx, api.TaskSpec{Name: "blocker", Command: []string{"/bin/sh", "-c", "echo blocking; sleep 600"},
		Node: "sp1", Cores: sp1.Total.Cores, MemBytes: 64 << 20, Uid: 65534, Gid: 65534})
	if err != nil {
		t.Fatal(err)
	}
	admin.waitJS(ov, "the blocker running", 30*time.Second, `(() => { const r = document.querySelector('#running-table tr[data-task=`+jsq(blocker.ID)+`]'); return !!r && r.dataset.state === 'running'; })()`)
	out, err := nodes[1].eddy("submit", "--json", "--name", "ticker", "--node", "sp1", "--cores", cores, "--mem", "64M", "--uid", "65534", "--gid", "65534",
		"--", "/bin/sh", "-c", "for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done; echo ticker-done")
	if err != nil {
		t.Fatal(err)
	}
	var ticker api.Task
	if err := json.Unmarshal([]byte(out), &ticker); err != nil || ticker.ID == "" {
		t.Fatalf("submit --json: %v %q", err, out)
	}
	tickerRow := `document.querySelector('tr[data-task=` + jsq(ticker.ID) + `]')`
	admin.waitJS(ov, "the ticker queued, waiting for sp1", 15*time.Second, `(() => { const r = `+tickerRow+`; return !!r && r.dataset.state === 'queued' && r.closest('table').id === 'queued-table' && r.cells[0].textContent === '1' && r.cells[6].textContent.includes('waiting for room on sp1'); })()`)
	time.Sleep(2500 * time.Millisecond) // a sample or two with the task queued, for the charts
	admin.run(ov, "refresh the charts", js(`document.querySelectorAll('img.chart').forEach(i => i.src = i.src.replace(/\?.*$/, '') + '?t=' + Date.now())`))
	time.Sleep(500 * time.Millisecond)
	admin.shot(ov, "overview-queued")

	// The ticker's page, opened while it waits, will follow its log.
	tickerTab := admin.tab()
	admin.run(tickerTab, "open the ticker's page", chromedp.Navigate(adminURL+"/task/"+ticker.ID), chromedp.WaitVisible(chromedp.ID("t-state")))
	admin.waitJS(tickerTab, "the ticker's page: queued", 10*time.Second, `document.getElementById('t-state').dataset.state === 'queued'`)

	// A viewer, on the joined node's page, cannot kill the blocker.
	viewer := newSPBrowser(t, exe, "viewer", arts)
	vt := viewer.ctx
	viewer.login(vt, viewerURL, viewerToken)
	viewer.waitJS(vt, "the viewer sees three nodes up", 20*time.Second, `document.querySelectorAll('#nodes-table tr[data-up="1"]').length === 3 && document.getElementById('role').textContent === 'viewer'`)
	viewer.run(vt, "open the blocker's page", chromedp.Navigate(viewerURL+"/task/"+blocker.ID), chromedp.WaitVisible(chromedp.ID("t-state")))
	viewer.waitJS(vt, "the blocker's page for the viewer", 10*time.Second, `document.getElementById('t-state').dataset.state === 'running' && document.getElementById('log-stdout').textContent.includes('blocking')`)
	if hidden, err := spEval[bool](vt, `document.getElementById('kill').hidden`); err != nil || !hidden {
		t.Fatalf("the viewer is offered a kill button (hidden=%v, %v)", hidden, err)
	}
	killJS := `fetch('/api/task/` + blocker.ID + `/kill', {method: 'POST', headers: {'X-CSRF-Token': document.querySelector('meta[name="eddy-csrf"]').content}}).then(r => r.status)`
	st, err := spEval[int](vt, killJS)
	if err != nil {
		t.Fatal(err)
	}
	if st != 403 {
		t.Fatalf("the viewer's kill: status %d, want 403", st)
	}
	viewer.shot(vt, "viewer-task")
	if tk, err := cl.Task(ctx, blocker.ID); err != nil || tk.State != api.StateRunning || tk.KillAsked {
		t.Fatalf("after the viewer's kill the blocker is %+v (%v)", tk.State, err)
	}

	// The admin kills it from its page.
	blockerTab := admin.tab()
	admin.run(blockerTab, "open the blocker's page", chromedp.Navigate(adminURL+"/task/"+blocker.ID), chromedp.WaitVisible(chromedp.ID("kill")))
	admin.run(blockerTab, "kill the blocker", chromedp.Click(chromedp.ID("kill")))
	admin.waitJS(blockerTab, "the blocker killed", 30*time.Second, `document.getElementById('t-state').dataset.state === 'killed'`)
	admin.shot(blockerTab, "task-killed")

	// The ticker now runs and completes: the overview shows it pass without a reload, its page
	// follows the log as it grows.
	seen := map[string]bool{"queued": true}
	var logLens []int
	deadline := time.Now().Add(60 * time.Second)
	for {
		state, err := spEval[string](ov, `(() => { const r = `+tickerRow+`; return r ? r.dataset.state : ''; })()`)
		if err == nil && state != "" {
			seen[state] = true
		}
		logText, err := spEval[string](tickerTab, `document.getElementById('log-stdout').textContent`)
		if err == nil {
			if len(logLens) == 0 || logLens[len(logLens)-1] != len(logText) {
				logLens = append(logLens, len(logText))
			}
		}
		if state == "completed" && strings.Contains(logText, "ticker-done") {
			break
		}
		if time.Now().After(deadline) {
			admin.shot(ov, "timeout-ticker")
			t.Fatalf("the ticker did not complete on the page: states seen %v, log %q\n%s", seen, logText, logs())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !seen["running"] && !seen["assigned"] {
		t.Errorf("the page never showed the ticker placed: %v", seen)
	}
	if len(logLens) < 3 {
		t.Errorf("the log did not grow in steps while followed: lengths %v", logLens)
	}
	if mark, err := spEval[int](ov, `window.__spMark || 0`); err != nil || mark != 42 {
		t.Fatalf("the overview reloaded (mark %d, %v)", mark, err)
	}
	admin.waitJS(ov, "the ticker's exit code", 10*time.Second, `(() => { const r = `+tickerRow+`; return !!r && r.closest('table').id === 'recent-table' && r.cells[5].textContent === '0'; })()`)
	admin.waitJS(tickerTab, "the ticker's page: completed, log complete", 15*time.Second,
		`document.getElementById('t-state').dataset.state === 'completed' && document.getElementById('log-follow').textContent === '(complete)' && document.getElementById('log-stdout').textContent.startsWith('tick 1\ntick 2\n')`)
	admin.shot(tickerTab, "task-completed")

	// Filters: by state and node, without a reload.
	admin.run(ov, "filter: ended on sp1", chromedp.SetValue(chromedp.ID("f-state"), "ended"),
		js(`document.getElementById('f-state').dispatchEvent(new Event('change'))`))
	admin.waitJS(ov, "only ended tasks", 10*time.Second, `document.querySelectorAll('#queued-table tr[data-task], #running-table tr[data-task]').length === 0 && document.querySelectorAll('#recent-table tr[data-task]').length === 2`)
	admin.run(ov, "filter: all", chromedp.SetValue(chromedp.ID("f-state"), ""),
		js(`document.getElementById('f-state').dispatchEvent(new Event('change'))`))
	time.Sleep(2500 * time.Millisecond)
	admin.run(ov, "refresh the charts", js(`document.querySelectorAll('img.chart').forEach(i => i.src = i.src.replace(/\?.*$/, '') + '?t=' + Date.now())`))
	time.Sleep(700 * time.Millisecond)
	p := admin.shot(ov, "overview")
	if os.Getenv("EDDY_UPDATE_DOCS") == "1" && p != "" {
		b, err := os.ReadFile(p)
		if err == nil {
			err = os.WriteFile(filepath.Join("..", "docs", "status-page.png"), b, 0o644)
		}
		if err != nil {
			t.Errorf("docs screenshot: %v", err)
		}
	}
}
