package nfs

import (
	"encoding/binary"
	"errors"
)

// errShort: a reply ended before its fields did (a malformed reply).
var errShort = errors.New("nfs: short or malformed XDR reply")

// enc appends XDR (RFC 4506) items to a byte slice.
type enc struct{ b []byte }

func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) bool(v bool) {
	if v {
		e.u32(1)
	} else {
		e.u32(0)
	}
}

// opaque appends variable-length opaque data (length, bytes, padding).
func (e *enc) opaque(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
	if pad := (4 - len(p)%4) % 4; pad > 0 {
		e.b = append(e.b, make([]byte, pad)...)
	}
}

func (e *enc) str(s string) { e.opaque([]byte(s)) }

// fixed appends fixed-length opaque data (no length word).
func (e *enc) fixed(p []byte) {
	e.b = append(e.b, p...)
	if pad := (4 - len(p)%4) % 4; pad > 0 {
		e.b = append(e.b, make([]byte, pad)...)
	}
}

// dec reads XDR items from a byte slice. The first decoding error sticks;
// later reads return zero values, so callers check err once at the end.
type dec struct {
	b   []byte
	off int
	err error
}

func (d *dec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || d.off+n > len(d.b) || d.off+n < d.off {
		d.err = errShort
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *dec) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *dec) u64() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (d *dec) bool() bool { return d.u32() != 0 }

// opaque returns variable-length opaque data; the slice aliases the reply
// buffer, copy it to keep it.
func (d *dec) opaque(max int) []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if int64(n) > int64(max) {
		d.err = errShort
		return nil
	}
	p := d.take(int(n))
	d.take((4 - int(n)%4) % 4)
	return p
}

func (d *dec) str(max int) string { return string(d.opaque(max)) }

func (d *dec) fixed(n int) []byte {
	p := d.take(n)
	d.take((4 - n%4) % 4)
	return p
}
