package sched

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// NodeRecord is what the scheduler keeps about a node across restarts (api.NodeRecord with the
// scheduler's Resources).
type NodeRecord struct {
	Name    string            `json:"name"`
	Address string            `json:"address"`
	Total   Resources         `json:"total"`
	GPUIDs  []string          `json:"gpu_ids,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	LinkBps float64           `json:"link_bps,omitempty"`
}

// Store keeps the scheduler's state: nodes, the queue and task history. Implementations must
// be safe for concurrent use. Today badger; a replicated store can stand behind it later.
type Store interface {
	PutTask(t *Task) error
	Tasks() ([]*Task, error) // every stored task, in ID order
	PutNode(n NodeRecord) error
	Nodes() ([]NodeRecord, error)
	Close() error
}

// BadgerStore is a Store in a badger database.
type BadgerStore struct{ db *badger.DB }

// OpenBadgerStore opens (or creates) the store in dir.
func OpenBadgerStore(dir string) (*BadgerStore, error) {
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithNumVersionsToKeep(1))
	if err != nil {
		return nil, fmt.Errorf("open scheduler store %s: %w", dir, err)
	}
	return &BadgerStore{db: db}, nil
}

func (s *BadgerStore) put(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *badger.Txn) error { return tx.Set([]byte(key), b) }); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

func scan[T any](db *badger.DB, prefix string) ([]T, error) {
	var out []T
	err := db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var v T
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &v) }); err != nil {
				return fmt.Errorf("%s: %w", it.Item().Key(), err)
			}
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", prefix, err)
	}
	return out, nil
}

// PutTask stores t.
func (s *BadgerStore) PutTask(t *Task) error { return s.put("t/"+t.ID, t) }

// Tasks loads every task.
func (s *BadgerStore) Tasks() ([]*Task, error) { return scan[*Task](s.db, "t/") }

// PutNode stores n.
func (s *BadgerStore) PutNode(n NodeRecord) error { return s.put("n/"+n.Name, n) }

// Nodes loads every node.
func (s *BadgerStore) Nodes() ([]NodeRecord, error) { return scan[NodeRecord](s.db, "n/") }

// Close closes the database.
func (s *BadgerStore) Close() error { return s.db.Close() }

// MemStore is a Store in memory (tests).
type MemStore struct {
	mu    sync.Mutex
	tasks map[string][]byte // guarded by mu
	nodes map[string]NodeRecord
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{tasks: map[string][]byte{}, nodes: map[string]NodeRecord{}}
}

// PutTask stores a copy of t.
func (m *MemStore) PutTask(t *Task) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tasks[t.ID] = b
	return nil
}

// Tasks returns copies of every task in ID order.
func (m *MemStore) Tasks() ([]*Task, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Task
	for _, b := range m.tasks {
		var t Task
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, err
		}
		out = append(out, &t)
	}
	sortTasks(out)
	return out, nil
}

// PutNode stores n.
func (m *MemStore) PutNode(n NodeRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes[n.Name] = n
	return nil
}

// Nodes returns every node.
func (m *MemStore) Nodes() ([]NodeRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []NodeRecord
	for _, n := range m.nodes {
		out = append(out, n)
	}
	return out, nil
}

// Close does nothing.
func (m *MemStore) Close() error { return nil }

var errClosed = errors.New("scheduler closed")
