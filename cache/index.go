package cache

// The badger index. Key layout (all keys are short; values are small and
// stay inline in the LSM tree):
//
//	f/<name>                  -> fileRec (JSON): one per cached file, keyed by origin name
//	c/<id:8 BE><idx:4 BE>     -> chunkRec (12 bytes): chunk present, its checksum and length
//	a/<access ns:8 BE><id:8>  -> <name>: the LRU order used by eviction
//	p/<name>                  -> "": a pin on a file or a directory prefix
//	s/id                      -> badger sequence for file IDs
//
// Read paths use keyed look-ups (f/<name>) and short range scans bounded by
// one file (c/<id>/...). Only background work (totals at start-up, eviction
// order, listings) walks larger ranges.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/eddy-cluster/eddy/origin"
)

const (
	prefixFile   = "f/"
	prefixChunk  = "c/"
	prefixAccess = "a/"
	prefixPin    = "p/"
	keyIDSeq     = "s/id"
)

// fileRec is the index record of one cached file version.
type fileRec struct {
	ID          uint64      `json:"id"`
	Attr        origin.Attr `json:"attr"`
	ChunkSize   int64       `json:"chunk_size"`
	LastAccess  int64       `json:"last_access"`  // unix ns; also the a/ key's timestamp
	ValidatedAt int64       `json:"validated_at"` // unix ns of the last successful check against the origin
}

func (r *fileRec) size() int64 { return r.Attr.Size }

func (r *fileRec) nchunks() int { return nchunks(r.Attr.Size, r.ChunkSize) }

func nchunks(size, csize int64) int {
	if size <= 0 {
		return 0
	}
	return int((size + csize - 1) / csize)
}

// chunkLen is the length of chunk idx of a file of size bytes.
func chunkLen(size, csize int64, idx int) int64 {
	off := int64(idx) * csize
	if size-off < csize {
		return size - off
	}
	return csize
}

type chunkRec struct {
	Sum uint64
	Len uint32
}

func (c chunkRec) encode() []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b, c.Sum)
	binary.BigEndian.PutUint32(b[8:], c.Len)
	return b
}

func decodeChunk(b []byte) (chunkRec, error) {
	if len(b) != 12 {
		return chunkRec{}, fmt.Errorf("chunk record: bad length %d", len(b))
	}
	return chunkRec{Sum: binary.BigEndian.Uint64(b), Len: binary.BigEndian.Uint32(b[8:])}, nil
}

func fileKey(name string) []byte { return []byte(prefixFile + name) }

// dirPrefix returns the f/ key prefix of everything below a directory name.
func dirPrefix(p string, name string) []byte {
	if name == "." || name == "" {
		return []byte(p)
	}
	return []byte(p + name + "/")
}

func chunkPrefix(id uint64) []byte {
	b := make([]byte, 2+8)
	copy(b, prefixChunk)
	binary.BigEndian.PutUint64(b[2:], id)
	return b
}

func chunkKey(id uint64, idx int) []byte {
	b := make([]byte, 2+8+4)
	copy(b, prefixChunk)
	binary.BigEndian.PutUint64(b[2:], id)
	binary.BigEndian.PutUint32(b[10:], uint32(idx))
	return b
}

func chunkIdx(key []byte) int { return int(binary.BigEndian.Uint32(key[10:])) }

func accessKey(ts int64, id uint64) []byte {
	b := make([]byte, 2+8+8)
	copy(b, prefixAccess)
	binary.BigEndian.PutUint64(b[2:], uint64(ts))
	binary.BigEndian.PutUint64(b[10:], id)
	return b
}

func pinKey(name string) []byte { return []byte(prefixPin + name) }

func encodeRec(r *fileRec) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // fileRec always marshals
	}
	return b
}

func decodeRec(b []byte) (*fileRec, error) {
	var r fileRec
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("file record: %w", err)
	}
	if r.ChunkSize <= 0 || r.ID == 0 {
		return nil, fmt.Errorf("file record: invalid (id %d, chunk size %d)", r.ID, r.ChunkSize)
	}
	return &r, nil
}

// getRec reads the record of name in txn; nil, nil when there is none.
func getRec(txn *badger.Txn, name string) (*fileRec, error) {
	it, err := txn.Get(fileKey(name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r *fileRec
	err = it.Value(func(v []byte) error {
		var derr error
		r, derr = decodeRec(v)
		return derr
	})
	return r, err
}

// getRecID reads only the ID of name's record in txn (0: there is none): a
// commit's check that the version it commits for is still the file's, which
// needs neither the attributes nor their times decoded.
func getRecID(txn *badger.Txn, name string) (uint64, error) {
	it, err := txn.Get(fileKey(name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var r struct {
		ID uint64 `json:"id"`
	}
	if err := it.Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
		return 0, fmt.Errorf("file record: %w", err)
	}
	return r.ID, nil
}

// chunkSums reads the chunk records of file id.
func chunkSums(txn *badger.Txn, id uint64, fn func(idx int, c chunkRec)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = chunkPrefix(id)
	opts.PrefetchSize = 64
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) != 14 {
			continue
		}
		var c chunkRec
		err := item.Value(func(v []byte) error {
			var derr error
			c, derr = decodeChunk(v)
			return derr
		})
		if err != nil {
			continue // a damaged chunk record reads as absent
		}
		fn(chunkIdx(k), c)
	}
	return nil
}

// cachedOf sums the valid cached bytes of file record r.
func cachedOf(txn *badger.Txn, r *fileRec) (bytes int64, chunks int) {
	_ = chunkSums(txn, r.ID, func(idx int, c chunkRec) {
		if idx < r.nchunks() && int64(c.Len) == chunkLen(r.size(), r.ChunkSize, idx) {
			bytes += int64(c.Len)
			chunks++
		}
	})
	return bytes, chunks
}

// badgerOptions bounds badger's memory: these nodes hold many files on
// small machines, so memtables, caches and value-log files are small.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(8 << 20).
		WithValueLogFileSize(16 << 20).
		WithValueThreshold(1 << 10).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(8 << 20).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithMetricsEnabled(false).
		WithSyncWrites(false)
}

// openIndex opens the badger index under dir. If it cannot be opened (a
// corrupt or foreign directory), the broken one is moved aside and a fresh
// index is created; broken reports that. The caller then discards the data
// files, whose chunks no longer have checksums.
func openIndex(dir string, log *slog.Logger) (db *badger.DB, broken error, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create index dir: %w", err)
	}
	db, oerr := badger.Open(badgerOptions(dir, log))
	if oerr == nil {
		return db, nil, nil
	}
	aside := fmt.Sprintf("%s.broken-%d", dir, time.Now().UnixNano())
	if err := os.Rename(dir, aside); err != nil {
		return nil, oerr, fmt.Errorf("open index: %w; move aside: %v", oerr, err)
	}
	log.Error("cache index unreadable; moved aside and rebuilding an empty one", "err", oerr, "aside", aside)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, oerr, fmt.Errorf("create index dir: %w", err)
	}
	db, err = badger.Open(badgerOptions(dir, log))
	if err != nil {
		return nil, oerr, fmt.Errorf("open fresh index: %w", err)
	}
	go func() { _ = os.RemoveAll(aside) }()
	return db, oerr, nil
}

// badgerLogger routes badger's logs to slog; its chatty INFO lines go to Debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error("badger: " + trimNL(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn("badger: " + trimNL(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Infof(f string, a ...any) { b.l.Debug("badger: " + trimNL(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Debugf(f string, a ...any) {
	b.l.Debug("badger: " + trimNL(fmt.Sprintf(f, a...)))
}

func trimNL(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s
}

// dataPath is the sparse data file of file id: named by ID, never by the
// user's path, spread over 256 directories.
func dataPath(root string, id uint64) string {
	return filepath.Join(root, fmt.Sprintf("%02x", id&0xff), fmt.Sprintf("%016x", id))
}
