// Package blocks makes a version of a model cost what changed: the block
// map of a checkpointed DuckDB file, found without reading unchanged blocks;
// a content-addressed store of blocks in the object store; and the
// reconstruction of a file from its map, reusing a local earlier version and
// verifying every block. The db-manager cuts and publishes versions with it
// (package dbmanager), and teactl pull and disaster recovery rebuild them.
//
// # The DuckDB 1.5 file layout
//
// Confirmed in DuckDB's source, branch v1.5-variegata at 6451060c3fce (the
// v1.5.6 tag, source id 069cc9f9b5, is not in the mirror; these files are
// unchanged since v1.5.5, d8cdaa33fda8), and tested against the DuckDB
// 1.5.6 that duckdb-go v2.10506.0 links (TestHeaderOfDuckDB156,
// TestRefusesWrongFiles):
//
//   - The file starts with three header slots of Storage::FILE_HEADER_SIZE
//     = 4096 bytes (storage_info.hpp:52); blocks start at BLOCK_START = 3 *
//     FILE_HEADER_SIZE = 12288 (single_file_block_manager.hpp:61), block i
//     at BLOCK_START + i * block_alloc_size (single_file_block_manager.cpp:1090).
//   - Slot 0 is the MainHeader, written once (cpp:528; rewritten only on a
//     64 -> 65 upgrade, cpp:1327): checksum, "DUCK", version_number, four
//     flag words (flags[0] bit 0 = encrypted), library version and source id
//     (32 bytes each), then encryption metadata, database id, canary, IV and
//     tag (MainHeader::Write, cpp:176). Slots 1 and 2 are DatabaseHeaders
//     (cpp:544, cpp:557): iteration, meta_block, free_list, block_count,
//     block_alloc_size, vector_size, serialization_compatibility
//     (DatabaseHeader::Write, cpp:256). The one with the higher iteration is
//     active (cpp:658); a checkpoint writes the other one (cpp:1337).
//   - Every slot and block begins with an 8-byte checksum of the rest
//     (ChecksumAndWrite, cpp:746-749; block header size
//     DEFAULT_BLOCK_HEADER_STORAGE_SIZE = 8, storage_info.hpp:31). Encrypted
//     files use 40-byte block headers (DEFAULT_ENCRYPTION_BLOCK_HEADER_SIZE,
//     storage_info.hpp:33, set with an encryption key at
//     storage_manager.cpp:102) and are refused here; otherwise the header
//     size is config.options.default_block_header_size (8; no setting
//     changes it, storage_manager.cpp:431). The checksum is Checksum in
//     src/common/checksum.cpp:67, reimplemented as Checksum here.
//   - block_alloc_size defaults to DEFAULT_BLOCK_ALLOC_SIZE = 262144
//     (storage_info.hpp:29, 0 in old headers means that), bounded by
//     MIN_BLOCK_ALLOC_SIZE 16384 and MAX_BLOCK_ALLOC_SIZE 262144
//     (storage_info.hpp:56-58).
//   - A CHECKPOINT syncs the blocks, writes the header with block_count =
//     the highest block + 1 (cpp:1306), syncs, trims fully freed blocks
//     (hole punching, cpp:1344), then truncates trailing free blocks
//     (checkpoint_manager.cpp:227, :264; cpp:1172). So the file may be
//     shorter than block_count says, and trimmed free blocks read as zeros
//     (others keep stale content; both are mapped like any block).
//   - Storage version numbers 64 to 68 are readable by 1.5
//     (storage_info.cpp:13-15, 68 = v1.5.x at :96-101); DuckDB 1.5.6 writes
//     64 with serialization compatibility 1 (v0.10.0) unless a database is
//     attached with a newer STORAGE_VERSION.
//
// # Block maps
//
// A Map lists the SHA-256 of the 12 KiB header area and of every block, in
// file order; its root (Map.Root) is SHA-256 over "teatree-blocks/1", the
// block size, the block count, the header digest and one SHA-256 per page
// of 1024 block digests. MapFile hashes every block; Remap reads only the
// 8-byte stored checksum of each block (one pread each) and hashes the
// blocks whose checksum changed or that are new, plus a scrub: at
// generation g the blocks i with i mod 64 == g mod 64 (ScrubEvery), so that
// every block is hashed again at least every 64 versions, 1/64 of the file
// per version instead of a full re-hash in one version. A full map happens
// when there is no previous map in memory (start, restart, a map decoded
// from a manifest carries no checksums).
//
// Trusting an unchanged checksum between scrubs rests on how DuckDB writes:
// a block is written only whole, at a checkpoint, with a fresh checksum of
// its whole content, and never while it is in use; so an unchanged checksum
// with changed content needs a rewrite whose new content collides. DuckDB's
// checksum is not cryptographic: it is the xor of every 8-byte word times
// an odd constant, so it misses reordered words and pairs of equal words
// appearing where there were equal words before (zeros, say). That is
// unlikely for real column segments and metadata, not impossible, and not
// a defence against data crafted to collide; the scrub bounds such a miss
// to 64 versions and counts it (MapStats.Mismatch), and the publisher's
// row-count check is a second net. Every block that is read is also checked
// against its stored checksum (or must be all zeros), which refuses torn
// writes and a file changing under the map.
//
// The caller maps a file that is checkpointed (no WAL: refused) and not
// written to meanwhile: the applier waits and automatic checkpoints must not
// interleave. DuckDB locks its file with fcntl F_SETLK
// (local_file_system.cpp:408), a lock of the process: closing any other
// descriptor of the file in the same process releases it. A db-manager
// therefore maps its live file through one descriptor it keeps open until
// DuckDB has closed the file (RemapFile, NewCapture), never by path
// (MapFile, Remap, OpenFile open and close their own; TestMapKeepsDuckDBLock).
//
// # Captures
//
// NewCapture freezes the file for upload after the writer moves on: a
// FICLONE reflink where the filesystem has one (XFS, Btrfs), else a spool
// (spool.blocks and spool.json, synced) of the blocks the previous map does
// not have. OpenSpool reopens a spool after a crash.
//
// # The block store
//
// One object per distinct block, models/<ns>/blocks/<sha256>.zst (ObjectKey;
// ns is the block namespace: the model, or for a fork its source's), shared
// by all versions of the model and its forks: a zstd frame of the block's
// bytes (EncodingZstd, klauspost/compress at SpeedFastest; the digest is of
// the decoded block, so the root does not depend on the encoding). The map
// records the encoding; maps without one (before compression) name raw
// objects at models/<ns>/blocks/<sha256>, which stay readable, and the
// first compressed version after them puts every block once. Compression
// matters for small changes to large models: the 41-52 blocks (2.6-3.3
// MiB) a one-row append to a 32 M-row table rewrites at CHECKPOINT are
// DuckDB metadata, a quarter zeros, and encode to 0.86-1.11 MiB; flights'
// column segments, compressed by DuckDB already, shrink little. Readers
// decode with a bound of MaxBlockSize, so a hostile object cannot inflate.
// Upload puts only the digests the previous map
// lacks and that are not already stored whole (read back and verified) and
// younger than Store.ReuseAge (10 minutes: an older unreferenced block may be
// deleted by a GC, whose grace period is an hour), verifying each block before the
// PUT. Per-block objects rather than per-version packs:
// a one-row append to the 3 M-row flights model changes 2 blocks (+ the
// header: 3 PUTs, 524 KiB), GC is a delete per unreferenced key, a reader
// fetches whole objects (no ranged GETs in objstore.Store), and the price is
// a full upload (first version, compaction): for the 30 MB flights file,
// 114 PUTs took 0.13 s on the directory store (0.08-0.1 s as one object)
// and 0.66-0.96 s on a local MinIO (0.23-0.56 s as one object), so 2 GiB
// (8192 blocks) takes about a minute there. See TestMeasureFlights.
//
// # Reconstruction
//
// Reconstruct builds a file from a Map: each distinct block once, from the
// first local source with the right content (FileSource over the previous
// version) or from the store, in parallel (8 by default), every block
// verified against its SHA-256, the map against the recorded root, zeros
// left as holes; written beside the output, synced and renamed over it, so
// a reader of the old file keeps it. The result is byte-identical and opens
// with DuckDB read-only (TestRoundTrip, TestPullReusesPreviousVersion).
package blocks
