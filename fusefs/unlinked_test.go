package fusefs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// noKeeper is an origin that does not say its open files outlive their
// names (as the nfs:// origin).
type noKeeper struct{ origin.FS }

// An unlinked open file stays readable and writable through its
// descriptor on an origin that would lose it: it is renamed aside until its
// last close, then removed.
func TestUnlinkedOpenFileKeptAside(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	org, err := origin.NewPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, mp := mountOrigin(t, noKeeper{org}, org, nil, Options{})
	p := filepath.Join(mp, "f")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("still here"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Fatalf("unlinked name still there: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), asidePrefix) {
		t.Fatalf("origin holds %v, want one aside name", ents)
	}
	buf := make([]byte, 10)
	if n, err := f.ReadAt(buf, 0); err != nil || string(buf[:n]) != "still here" {
		t.Fatalf("read through the unlinked file: %q %v", buf[:n], err)
	}
	if _, err := f.WriteAt([]byte("STILL"), 0); err != nil {
		t.Fatalf("write through the unlinked file: %v", err)
	}
	f.Close()
	// RELEASE reaches the daemon just after close returns.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, _ := os.ReadDir(dir)
		if len(ents) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("aside name left after the last close: %v", ents)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
