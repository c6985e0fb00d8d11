package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eddy-cluster/eddy/units"
)

// Progress shows what the suite is doing on the terminal: a live line with
// the current step, bytes and rate (rewritten in place on a terminal, one
// line every few seconds otherwise), and permanent lines for finished steps.
// A nil *Progress accepts Add and does nothing.
type Progress struct {
	out io.Writer
	tty bool

	bytes atomic.Int64
	ops   atomic.Int64

	mu      sync.Mutex
	label   string    // guarded by mu; "" when idle
	start   time.Time // guarded by mu
	lastLen int       // guarded by mu: length of the live line to erase

	stop chan struct{}
	done chan struct{}
}

// NewProgress writes to w (usually os.Stderr).
func NewProgress(w io.Writer) *Progress {
	p := &Progress{out: w, stop: make(chan struct{}), done: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	go p.loop()
	return p
}

// Add counts bytes and operations done by the current step.
func (p *Progress) Add(bytes, ops int64) {
	if p == nil {
		return
	}
	p.bytes.Add(bytes)
	p.ops.Add(ops)
}

// Begin starts a new live step.
func (p *Progress) Begin(label string) {
	if p == nil {
		return
	}
	p.bytes.Store(0)
	p.ops.Store(0)
	p.mu.Lock()
	p.label = label
	p.start = time.Now()
	p.mu.Unlock()
}

// Printf ends the live line and prints a permanent line.
func (p *Progress) Printf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	p.label = ""
	fmt.Fprintf(p.out, format+"\n", args...)
}

func (p *Progress) clearLocked() {
	if p.tty && p.lastLen > 0 {
		fmt.Fprintf(p.out, "\r%*s\r", p.lastLen, "")
		p.lastLen = 0
	}
}

// Close stops the live line.
func (p *Progress) Close() {
	if p == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
}

func (p *Progress) loop() {
	defer close(p.done)
	period := 250 * time.Millisecond
	if !p.tty {
		period = 5 * time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		if p.label != "" {
			el := time.Since(p.start).Seconds()
			b, ops := p.bytes.Load(), p.ops.Load()
			line := fmt.Sprintf("  %s: %s", p.label, units.FormatBytesUpToGiB(b))
			if el > 0 {
				line += fmt.Sprintf(" %.0f MB/s", float64(b)/1e6/el)
				if ops > 0 {
					line += fmt.Sprintf(", %d ops %.0f/s", ops, float64(ops)/el)
				}
			}
			line += fmt.Sprintf(" [%.0fs]", el)
			if p.tty {
				pad := max(0, p.lastLen-len(line))
				fmt.Fprintf(p.out, "\r%s%*s", line, pad, "")
				p.lastLen = len(line)
			} else {
				fmt.Fprintln(p.out, line)
			}
		}
		p.mu.Unlock()
	}
}
