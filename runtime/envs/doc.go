// Package envs manages container environment tarballs on the share: listing the versions of
// each environment (eddy's containers/<env>/<env>_<unix-ts>.tar[.gz] and KohakuRiver's
// kohakuriver-containers/<env>/ with the same naming), importing a new version atomically
// (temporary name in the same directory, fsync, rename), pruning old versions without removing
// one in use, recently written, or being imported by a node (lease files).
//
// It works on a directory path (the share's mount or the origin directly) and knows nothing of
// containerd or of tasks; callers tell it what is in use through a hook.
package envs
