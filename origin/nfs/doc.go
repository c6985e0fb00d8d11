// Package nfs is the NFSv3 origin: eddy speaks NFS itself (ONC RPC over TCP,
// the MOUNT and portmap protocols), so a node needs no kernel NFS client and
// no mount. It implements origin.FS over several TCP connections, caches
// directory handles, recovers from stale handles, dropped connections and
// restarted servers, and maps NFS status codes to errno values.
//
// Importing the package registers the "nfs" scheme with origin.Open.
//
// It knows nothing of caching or FUSE. The wire protocol is implemented here
// rather than through github.com/willscott/go-nfs-client because that client
// has no context or deadline on calls (a dead server blocks a call for
// minutes) and its receive loop can wedge on a late reply.
package nfs
