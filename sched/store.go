package sched

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
// be safe for concurrent use. It is written by the state machine (FSM) only, which applies the
// scheduler's commands, replicated through raft or not.
type Store interface {
	PutTask(t *Task) error
	Tasks() ([]*Task, error) // every stored task, in ID order
	PutNode(n NodeRecord) error
	Nodes() ([]NodeRecord, error)
	// Write stores tasks and nodes and, when index is not 0, records index as the last raft
	// log entry applied, in one transaction as far as the store allows (the index last).
	Write(index uint64, tasks []*Task, nodes []NodeRecord) error
	// Applied is the last index Write recorded (0: none; the state predates replication).
	Applied() (uint64, error)
	// Reset empties the store (a snapshot is restored over it).
	Reset() error
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

// appliedKey holds the index of the last raft log entry applied to the store.
const appliedKey = "meta/applied"

// Write stores tasks, nodes and the applied index: one transaction, or, when they do not fit
// in one, batches with the index in the last.
func (s *BadgerStore) Write(index uint64, tasks []*Task, nodes []NodeRecord) error {
	type kv struct {
		k string
		v []byte
	}
	var kvs []kv
	for _, t := range tasks {
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		kvs = append(kvs, kv{"t/" + t.ID, b})
	}
	for _, n := range nodes {
		b, err := json.Marshal(n)
		if err != nil {
			return err
		}
		kvs = append(kvs, kv{"n/" + n.Name, b})
	}
	if index != 0 {
		kvs = append(kvs, kv{appliedKey, []byte(strconv.FormatUint(index, 10))})
	}
	if len(kvs) <= 256 {
		err := s.db.Update(func(tx *badger.Txn) error {
			for _, e := range kvs {
				if err := tx.Set([]byte(e.k), e.v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store write: %w", err)
		}
		return nil
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, e := range kvs[:len(kvs)-1] {
		if err := wb.Set([]byte(e.k), e.v); err != nil {
			return fmt.Errorf("store write: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("store write: %w", err)
	}
	last := kvs[len(kvs)-1]
	return s.db.Update(func(tx *badger.Txn) error { return tx.Set([]byte(last.k), last.v) })
}

// Applied is the recorded index (0: none).
func (s *BadgerStore) Applied() (uint64, error) {
	var n uint64
	err := s.db.View(func(tx *badger.Txn) error {
		it, err := tx.Get([]byte(appliedKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(b []byte) error {
			n, err = strconv.ParseUint(string(b), 10, 64)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store applied index: %w", err)
	}
	return n, nil
}

// Reset drops everything.
func (s *BadgerStore) Reset() error {
	if err := s.db.DropAll(); err != nil {
		return fmt.Errorf("store reset: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *BadgerStore) Close() error { return s.db.Close() }

// MemStore is a Store in memory (tests).
type MemStore struct {
	mu      sync.Mutex
	tasks   map[string][]byte // guarded by mu
	nodes   map[string]NodeRecord
	applied uint64
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

// Write stores tasks, nodes and the index.
func (m *MemStore) Write(index uint64, tasks []*Task, nodes []NodeRecord) error {
	for _, t := range tasks {
		if err := m.PutTask(t); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		_ = m.PutNode(n)
	}
	if index != 0 {
		m.mu.Lock()
		m.applied = index
		m.mu.Unlock()
	}
	return nil
}

// Applied is the recorded index.
func (m *MemStore) Applied() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied, nil
}

// Reset drops everything.
func (m *MemStore) Reset() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.tasks)
	clear(m.nodes)
	m.applied = 0
	return nil
}

// Close does nothing.
func (m *MemStore) Close() error { return nil }

var errClosed = errors.New("scheduler closed")
