package origin

import (
	"errors"
	"path"
	"strings"
	"testing"
)

// FuzzClean: whatever a FUSE caller, the API or a task spec passes, Clean
// either refuses it with ErrEscape or returns a canonical relative name that
// stays beneath the root.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"", ".", "/", "a/b", "../x", "a/../../x", "a/./b//c/", "/abs/path", "a\x00b", "..", "...", "a/..", "./.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c, err := Clean(name)
		if err != nil {
			if !errors.Is(err, ErrEscape) {
				t.Fatalf("Clean(%q) error %v is not ErrEscape", name, err)
			}
			return
		}
		if c == "" || strings.HasPrefix(c, "/") || strings.IndexByte(c, 0) >= 0 {
			t.Fatalf("Clean(%q) = %q", name, c)
		}
		if c != "." {
			for _, el := range strings.Split(c, "/") {
				if el == "" || el == "." || el == ".." {
					t.Fatalf("Clean(%q) = %q has element %q", name, c, el)
				}
			}
		}
		if path.Clean(c) != c {
			t.Fatalf("Clean(%q) = %q is not canonical", name, c)
		}
		// Joined under a root it stays under the root.
		if j := path.Join("/root", c); j != "/root" && !strings.HasPrefix(j, "/root/") {
			t.Fatalf("Clean(%q) = %q escapes: %q", name, c, j)
		}
		// Idempotent.
		if c2, err := Clean(c); err != nil || c2 != c {
			t.Fatalf("Clean(Clean(%q)) = %q, %v; want %q", name, c2, err, c)
		}
	})
}
