// Package s3 is the object-storage origin: a bucket (or a prefix in one) of
// any S3-compatible server seen as a directory tree.
//
//	s3://BUCKET[/PREFIX]?endpoint=URL[&region=R][&path_style=1][&credentials_file=F]
//	    [&profile=P][&spool=DIR][&timeout=D][&uid=U][&gid=G]
//
// Objects are regular files; "/"-delimited prefixes, and empty objects whose
// key ends in "/" (directory markers), are directories. Attributes are
// synthesised: mode 0644 for files and 0755 for directories, the uid and gid
// of the daemon (or uid=, gid=), one link, an inode number hashed from the
// key. A file's fingerprint is its size, its Last-Modified time and a hash of
// its ETag, so an object replaced on the server is a new version even when
// size and time agree.
//
// Reads are ranged GETs carrying If-Match with the ETag seen at open: a
// replacement during a read fails the read with ESTALE instead of mixing two
// versions. Writes go to a local spool file and are uploaded when the file is
// synced or closed; rename is a server-side copy and a delete (not atomic).
// What S3 cannot express (hard and symbolic links, device nodes, mode, owner
// and time changes) fails with EPERM, every time. docs/s3.md has the details.
//
// The client is github.com/minio/minio-go/v7: maintained, small, and it
// speaks to any S3-compatible server (versitygw, MinIO, Ceph RGW, Garage,
// AWS) with Signature V4 and without the AWS SDK's default request checksums
// that other servers refuse. Its retries (with backoff) cover 5xx answers,
// SlowDown and dropped connections; what is still failing when the
// operation's time is up comes back as origin trouble (ErrUnavailable, EIO),
// never as absence.
//
// Importing the package registers the "s3" scheme with origin.Open.
package s3
