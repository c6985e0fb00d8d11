package topo

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// TestVersityGWSeedAcrossNamespaces starts versitygw in the server
// namespace, seeds a bucket from there and reads an object back with a
// client dialled from the client namespace.
func TestVersityGWSeedAcrossNamespaces(t *testing.T) {
	needRoot(t)
	bin, err := filepath.Abs(filepath.Join("..", "..", ".tools", "versitygw", "bin", "versitygw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("versitygw not built (scripts/versitygw.sh): %v", err)
	}
	p := newPair(t, "")
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"a.txt": "alpha", "d/b.txt": "bravo"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gw, err := StartVersityGW(ctx, VersityGWOptions{Bin: bin, Netns: p.Server, Addr: p.ServerAddr, Port: 7070,
		Dir: t.TempDir(), Access: "TOPOTESTKEY", Secret: "topo-test-secret", ReadyFrom: p.Client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := gw.Close(); err != nil {
			t.Error(err)
		}
	})
	if strings.Contains(strings.Join(gw.Args, " "), "topo-test-secret") {
		t.Errorf("secret on the command line: %v", gw.Args)
	}
	n, size, err := gw.Seed(ctx, p.Server, "topo-bucket", src, 2)
	if err != nil || n != 2 || size != 10 {
		t.Fatalf("seed: %d files, %d bytes, %v", n, size, err)
	}
	cl, err := gw.Client(p.Client)
	if err != nil {
		t.Fatal(err)
	}
	o, err := cl.GetObject(ctx, "topo-bucket", "d/b.txt", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	got, err := io.ReadAll(o)
	if err != nil || string(got) != "bravo" {
		t.Fatalf("read back %q, %v", got, err)
	}
}
