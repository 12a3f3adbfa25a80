package blocks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
)

// MaxMapBytes bounds a block map read from the object store: 16 MiB holds
// the map of a file of about 60 GiB (256 KiB blocks, 65 bytes per digest).
const MaxMapBytes = 16 << 20

// PutMap stores m as JSON at key unless an object is there already (a
// resumed publication; it is never overwritten).
func PutMap(ctx context.Context, objs objstore.Store, key string, m *Map) error {
	if _, err := objs.Stat(ctx, key); err == nil {
		return nil
	} else if !errors.Is(err, model.ErrNotFound) {
		return fmt.Errorf("blocks: stat %s: %w", key, err)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("blocks: %w", err)
	}
	if err := objs.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("blocks: upload %s: %w", key, err)
	}
	return nil
}

// GetMap reads the block map at key and checks it against root, the root
// digest the version records (ErrCorrupt otherwise).
func GetMap(ctx context.Context, objs objstore.Store, key string, root Digest) (*Map, error) {
	rc, err := objs.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, MaxMapBytes+1))
	if err != nil {
		return nil, fmt.Errorf("blocks: get %s: %w", key, err)
	}
	if len(data) > MaxMapBytes {
		return nil, fmt.Errorf("block map %s: %w: larger than %d bytes", key, model.ErrInvalid, MaxMapBytes)
	}
	m, err := ParseMap(data)
	if err != nil {
		return nil, fmt.Errorf("block map %s: %w", key, err)
	}
	if got := m.Root(); got != root {
		return nil, fmt.Errorf("block map %s: %w: its root is %s, the version records %s", key, ErrCorrupt, got, root)
	}
	return m, nil
}

// FetchOptions configure Fetch.
type FetchOptions struct {
	// Reuse lists local files (earlier versions of the model) whose blocks
	// are used instead of downloads where they match; missing files are
	// skipped. Maps, when given for a file, save hashing it.
	Reuse []string
	Maps  map[string]*Map
	// Parallel and Progress are ReconstructOptions'.
	Parallel int
	Progress func(n int64)
}

// Fetch writes the version whose block map is at key, with root digest
// root and its blocks in block namespace ns (BlockKey), to out (see
// Reconstruct), reusing what opts.Reuse holds.
func Fetch(ctx context.Context, objs objstore.Store, ns, key string, root Digest, out string, opts FetchOptions) (*Map, ReconstructStats, error) {
	store, err := NewStore(objs, ns)
	if err != nil {
		return nil, ReconstructStats{}, err
	}
	bm, err := GetMap(ctx, objs, key, root)
	if err != nil {
		return nil, ReconstructStats{}, err
	}
	store.Encoding = bm.Encoding
	var local []Source
	for _, p := range opts.Reuse {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		src, err := OpenFile(ctx, p, opts.Maps[p])
		if err != nil {
			continue // not a DuckDB file this package maps: download instead
		}
		defer src.Close()
		local = append(local, src)
	}
	st, err := Reconstruct(ctx, bm, out, ReconstructOptions{Root: root, Local: local, Remote: store, Parallel: opts.Parallel, Progress: opts.Progress})
	st.Downloaded = store.Downloaded()
	return bm, st, err
}

// ParseDigest decodes a hex SHA-256.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	err := d.UnmarshalText([]byte(s))
	return d, err
}
