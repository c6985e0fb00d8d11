package s3

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/minio/minio-go/v7"

	"github.com/eddy-cluster/eddy/origin"
)

// errNotSupported is what every operation S3 cannot express returns: hard
// and symbolic links, device nodes, and changes of mode, owner or times.
// EPERM is what link(2), symlink(2) and mknod(2) return on a file system
// that does not support the kind of object, and it reads the same for
// chmod, chown and utimes.
var errNotSupported = syscall.EPERM

// s3Error returns the server's answer in err, if it is one.
func s3Error(err error) (minio.ErrorResponse, bool) {
	var r minio.ErrorResponse
	if errors.As(err, &r) && (r.StatusCode != 0 || r.Code != "") {
		return r, true
	}
	var pr *minio.ErrorResponse
	if errors.As(err, &pr) && pr != nil && (pr.StatusCode != 0 || pr.Code != "") {
		return *pr, true
	}
	return minio.ErrorResponse{}, false
}

// errnoOf maps a server answer to the errno it means, and says whether it
// is trouble (the server failing or refusing to work now) rather than an
// answer about the object.
func errnoOf(r minio.ErrorResponse) (errno syscall.Errno, trouble bool) {
	switch r.Code {
	case "NoSuchKey", "NotFound":
		return syscall.ENOENT, false
	case "PreconditionFailed":
		return syscall.ESTALE, false
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled":
		return syscall.EACCES, false
	case "NoSuchBucket":
		// The bucket the origin stands on is gone or unreachable: trouble,
		// never the absence of one file.
		return syscall.EIO, true
	case "EntityTooLarge":
		return syscall.EFBIG, false
	case "SlowDown", "SlowDownRead", "SlowDownWrite", "RequestTimeout", "InternalError", "ServiceUnavailable",
		"RequestTimeTooSkewed", "ExpiredToken", "Throttling", "RequestLimitExceeded":
		return syscall.EIO, true
	case "XMinioServerNotInitialized", "XMinioStorageFull":
		return syscall.EIO, true
	}
	switch {
	case r.StatusCode == http.StatusNotFound:
		return syscall.ENOENT, false
	case r.StatusCode == http.StatusPreconditionFailed:
		return syscall.ESTALE, false
	case r.StatusCode == http.StatusForbidden:
		return syscall.EACCES, false
	case r.StatusCode >= 500 || r.StatusCode == http.StatusTooManyRequests || r.StatusCode == http.StatusRequestTimeout:
		return syscall.EIO, true
	}
	return syscall.EIO, false
}

// wrap turns an error from the client into eddy's terms: ENOENT for absent
// objects, ESTALE for a failed If-Match, EACCES for refusals, and
// *origin.UnavailableError (ErrUnavailable, EIO) for a server that cannot
// be reached or keeps failing. Errors that already carry an errno keep it.
func wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var ue *origin.UnavailableError
	if errors.As(err, &ue) {
		return err
	}
	if r, ok := s3Error(err); ok {
		errno, trouble := errnoOf(r)
		cause := fmt.Errorf("%s (HTTP %d): %w", r.Code, r.StatusCode, errno)
		if r.Code == "" {
			cause = fmt.Errorf("HTTP %d: %w", r.StatusCode, errno)
		}
		if trouble {
			return &origin.UnavailableError{Op: "s3 " + op + " " + name, Cause: cause}
		}
		return fmt.Errorf("s3 %s %s: %w", op, name, cause)
	}
	var uerr *url.Error
	var operr *net.OpError
	if errors.As(err, &uerr) || errors.As(err, &operr) || errors.Is(err, context.DeadlineExceeded) {
		// Transport trouble: refused, reset, timed out, DNS, the deadline.
		return &origin.UnavailableError{Op: "s3 " + op + " " + name, Cause: err}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("s3 %s %s: %w", op, name, err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("s3 %s %s: %w (%w)", op, name, syscall.EINTR, err)
	}
	// Anything else the client failed with is trouble too.
	return &origin.UnavailableError{Op: "s3 " + op + " " + name, Cause: err}
}
