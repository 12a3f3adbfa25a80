package objstore

// DirSyncs is the number of directory syncs of directory stores so far.
func DirSyncs() int64 { return dirSyncs.Load() }
