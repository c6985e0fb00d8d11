package cache

// Index writes outside the group commit (persist.go): a fresh record for a
// new version, and deleting chunk records with the byte totals kept in step.

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// replaceRec writes a fresh record (new ID) for name, dropping the content
// of the previous record prev (nil if none). nv receives the new ID.
func (s *Store) replaceRec(name string, prev *fileRec, nv *version, now time.Time) error {
	id, err := s.nextID()
	if err != nil {
		return err
	}
	rec := &fileRec{ID: id, Attr: nv.attr, ChunkSize: s.csize, LastAccess: now.UnixNano(), ValidatedAt: now.UnixNano()}
	var dropped int64
	if prev != nil {
		if err := os.Remove(dataPath(s.dataDir, prev.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.diskError("remove data file", err)
		}
		dropped, err = s.deleteChunks(prev)
		if err != nil {
			return err
		}
	}
	s.totMu.RLock()
	defer s.totMu.RUnlock()
	err = s.db.Update(func(txn *badger.Txn) error {
		if prev != nil {
			if err := txn.Delete(accessKey(prev.LastAccess, prev.ID)); err != nil {
				return err
			}
		}
		if err := txn.Set(accessKey(rec.LastAccess, id), []byte(name)); err != nil {
			return err
		}
		return txn.Set(fileKey(name), encodeRec(rec))
	})
	if err != nil {
		return err
	}
	_ = dropped
	if prev == nil {
		s.c.files.Add(1)
		if s.isPinned(name) {
			s.c.pinnedFiles.Add(1)
		}
	}
	nv.id, nv.csize = id, s.csize
	return nil
}

// deleteChunks deletes the chunk records of r and subtracts their bytes
// from the totals; it returns the bytes dropped.
func (s *Store) deleteChunks(r *fileRec) (int64, error) {
	var keys [][]byte
	var lens []int64
	err := s.db.View(func(txn *badger.Txn) error {
		return chunkSums(txn, r.ID, func(idx int, c chunkRec) {
			keys = append(keys, chunkKey(r.ID, idx))
			if idx < r.nchunks() && int64(c.Len) == chunkLen(r.size(), r.ChunkSize, idx) {
				lens = append(lens, int64(c.Len))
			} else {
				lens = append(lens, 0)
			}
		})
	})
	if err != nil {
		return 0, err
	}
	var total int64
	for len(keys) > 0 {
		n := min(len(keys), 4096)
		var sum int64
		for _, l := range lens[:n] {
			sum += l
		}
		s.totMu.RLock()
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, k := range keys[:n] {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			s.c.cachedBytes.Add(-sum)
		}
		s.totMu.RUnlock()
		if err != nil {
			return total, err
		}
		total += sum
		keys, lens = keys[n:], lens[n:]
	}
	return total, nil
}

// dropChunkRec deletes one chunk record of version nv.
func (s *Store) dropChunkRec(name string, nv *version, rec *fileRec, idx int) {
	var l int64
	if idx < nv.nchunks {
		l = chunkLen(nv.size, nv.csize, idx)
	}
	s.totMu.RLock()
	defer s.totMu.RUnlock()
	err := s.db.Update(func(txn *badger.Txn) error {
		it, err := txn.Get(chunkKey(nv.id, idx))
		if errors.Is(err, badger.ErrKeyNotFound) {
			l = 0
			return nil
		}
		if err != nil {
			return err
		}
		_ = it.Value(func(b []byte) error {
			if c, err := decodeChunk(b); err != nil || int64(c.Len) != l {
				l = 0
			}
			return nil
		})
		return txn.Delete(chunkKey(nv.id, idx))
	})
	if err != nil {
		s.noteError("index-write", fmt.Errorf("drop chunk %d of %s: %w", idx, name, err))
		return
	}
	s.c.cachedBytes.Add(-l)
	_ = rec
}
