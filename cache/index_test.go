package cache

import (
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/eddy-cluster/eddy/origin"
)

// getRecID reads the ID getRec does, and 0 for a name without a record.
func TestGetRecID(t *testing.T) {
	s := openStore(t, newFakeOrigin(), Config{Dir: t.TempDir()})
	rec := &fileRec{ID: 77, ChunkSize: 1 << 20, Attr: origin.Attr{Size: 5, Mtime: time.Unix(1, 2)}}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(fileKey("a/b"), encodeRec(rec)) }); err != nil {
		t.Fatal(err)
	}
	_ = s.db.View(func(txn *badger.Txn) error {
		full, err := getRec(txn, "a/b")
		if err != nil || full == nil {
			t.Fatalf("getRec: %v %v", full, err)
		}
		id, err := getRecID(txn, "a/b")
		if err != nil || id != full.ID || id != 77 {
			t.Fatalf("getRecID = %d %v, getRec's ID %d", id, err, full.ID)
		}
		if id, err := getRecID(txn, "none"); err != nil || id != 0 {
			t.Fatalf("getRecID of a name without a record = %d %v", id, err)
		}
		return nil
	})
}
