package origin

import (
	"syscall"
)

// UnavailableError is trouble reaching the origin (connection refused or
// dropped, timeout, server restarting): errors.Is(err, ErrUnavailable) holds,
// Errno(err) is EIO, and the cause stays in the message. It never means the
// object is absent.
type UnavailableError struct {
	Op    string // "read data/x", "lstat a/b", ...
	Cause error
}

func (e *UnavailableError) Error() string {
	if e.Cause == nil {
		return e.Op + ": " + ErrUnavailable.Error()
	}
	return e.Op + ": " + ErrUnavailable.Error() + ": " + e.Cause.Error()
}

// Unwrap yields ErrUnavailable and EIO first (so Errno finds EIO, not
// whatever errno the cause carries), then the cause.
func (e *UnavailableError) Unwrap() []error {
	return []error{ErrUnavailable, syscall.EIO, e.Cause}
}
