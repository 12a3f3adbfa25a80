package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// Fork creates model dst whose first version is version n of model src
// (0: src's latest), without copying data: dst shares src's block
// namespace (blocks, Parquet data files, modules), and its version 1 has
// its own manifest and block map, the lineage parent src@n, and lists
// src@n's blocks and data files. dst owns the requests published from
// now on; its db-manager starts from version 1 (restored from the block
// store, as after a lost volume). It runs in one Postgres transaction
// (controldb.ForkModel) that holds src@n against retention.
//
// Errors: model.ErrInvalid for a bad id; model.ErrNotFound for an unknown
// model or version; model.ErrConflict when dst exists; ErrUnreachable
// when NATS, Postgres or the object store fails.
func (c *Client) Fork(ctx context.Context, src string, n int64, dst string) (controldb.Model, error) {
	for _, id := range []string{src, dst} {
		if err := model.ValidateID(id); err != nil {
			return controldb.Model{}, err
		}
	}
	if n < 0 {
		return controldb.Model{}, fmt.Errorf("%w: fork %s: version %d: give a published version number", model.ErrInvalid, src, n)
	}
	js, err := c.js()
	if err != nil {
		return controldb.Model{}, err
	}
	ctl, err := c.ctl()
	if err != nil {
		return controldb.Model{}, err
	}
	store, err := c.store()
	if err != nil {
		return controldb.Model{}, err
	}
	// The fork owns the requests published after this point, as a model
	// created with teactl model create.
	last, err := queue.StreamLastSeq(ctx, js)
	if err != nil {
		return controldb.Model{}, unreachable(err)
	}
	var written []string
	mdl, err := ctl.ForkModel(ctx, controldb.Fork{Src: src, Version: n, Dst: dst, StartSeq: last + 1}, func(ctx context.Context, v controldb.Version, d controldb.Model) (controldb.Version, error) {
		nv, keys, err := writeFork(ctx, c, v, d)
		written = keys
		return nv, err
	})
	if err != nil {
		// Nothing names the objects of a fork not recorded: remove them,
		// so that a model created later under dst finds none. Not when
		// the commit went through after all (a connection lost at
		// commit): then the fork exists and they are its version 1; nor
		// when another model dst exists by now (they may be its).
		if len(written) > 0 {
			dctx := context.WithoutCancel(ctx)
			if _, gerr := ctl.GetModel(dctx, dst); errors.Is(gerr, model.ErrNotFound) {
				for _, k := range written {
					store.Delete(dctx, k)
				}
			}
		}
		if errors.Is(err, model.ErrInvalid) || errors.Is(err, model.ErrNotFound) || errors.Is(err, model.ErrConflict) || errors.Is(err, blocks.ErrCorrupt) {
			return controldb.Model{}, err
		}
		return controldb.Model{}, unreachable(err)
	}
	return mdl, nil
}

// writeFork puts version 1 of fork d of version v (its block map, checked
// against v's root, and its manifest) and returns it with the keys put.
func writeFork(ctx context.Context, c *Client, v controldb.Version, d controldb.Model) (controldb.Version, []string, error) {
	store := c.opts.Store
	root, err := blocks.ParseDigest(v.SHA256)
	if err != nil {
		return controldb.Version{}, nil, fmt.Errorf("fork %s@%d: %w", v.Model, v.Version, err)
	}
	bm, err := blocks.GetMap(ctx, store, v.SnapshotURI, root)
	if err != nil {
		return controldb.Version{}, nil, fmt.Errorf("fork %s@%d: %w", v.Model, v.Version, err)
	}
	mf, err := sourceManifest(ctx, c, v)
	if err != nil {
		return controldb.Version{}, nil, err
	}
	duckdb := ""
	if v.Lineage != nil {
		duckdb = v.Lineage.DuckDB
	}
	lin := &model.Lineage{Parent: v.Version, ParentModel: v.Model, Requests: []model.LineageRequest{}, Build: svcinfo.Version(), DuckDB: duckdb}
	created := time.Now().UTC()
	mapKey, mfKey := snapshot.BlockMapKey(d.ID, 1), snapshot.ManifestKey(d.ID, 1)
	mf.Model, mf.Version, mf.Namespace, mf.Created, mf.Epoch = d.ID, 1, d.Namespace, created, 0
	mf.FirstSeq, mf.LastSeq, mf.RequestCount = v.LastSeq, v.LastSeq, 0
	mf.Snapshot.Key, mf.Uploaded, mf.ParquetWritten, mf.Lineage = mapKey, 0, 0, lin
	var keys []string
	put := func(key string, data []byte) error {
		keys = append(keys, key)
		if err := store.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			return fmt.Errorf("fork %s@%d: upload %s: %w", v.Model, v.Version, key, err)
		}
		return nil
	}
	mj, err := json.Marshal(bm)
	if err != nil {
		return controldb.Version{}, keys, err
	}
	if err := put(mapKey, mj); err != nil {
		return controldb.Version{}, keys, err
	}
	fj, err := json.MarshalIndent(mf, "", "  ")
	if err != nil {
		return controldb.Version{}, keys, err
	}
	if err := put(mfKey, fj); err != nil {
		return controldb.Version{}, keys, err
	}
	nv := v
	nv.Model, nv.Version, nv.Namespace = d.ID, 1, d.Namespace
	nv.SnapshotURI, nv.ManifestURI = mapKey, mfKey
	nv.FirstSeq, nv.LastSeq, nv.RequestCount = v.LastSeq, v.LastSeq, 0
	nv.Epoch, nv.Created, nv.Expired, nv.Uploaded, nv.Compaction = 0, created, nil, 0, false
	nv.Lineage, nv.Pins = lin, nil
	return nv, keys, nil
}

// sourceManifest is the manifest of v, or when v has none in the object
// store (a version recorded without one) the manifest its Postgres rows
// describe.
func sourceManifest(ctx context.Context, c *Client, v controldb.Version) (snapshot.Manifest, error) {
	var mf snapshot.Manifest
	rc, err := c.opts.Store.Get(ctx, v.ManifestURI)
	if errors.Is(err, model.ErrNotFound) || v.ManifestURI == "" {
		mf = snapshot.Manifest{Format: v.SnapshotFormat, Snapshot: snapshot.File{Bytes: v.Bytes, SHA256: v.SHA256}}
		for _, t := range v.Tables {
			st := snapshot.Table{Name: t.Name, Rows: t.Rows}
			json.Unmarshal(t.Schema, &st.Columns) // a schema that is no column list gives none
			for _, f := range t.Files {
				st.Files = append(st.Files, snapshot.DataFile{Key: f.Key, Rows: f.Rows, Bytes: f.Bytes, SHA256: f.SHA256})
			}
			mf.Tables = append(mf.Tables, st)
		}
		return mf, nil
	}
	if err != nil {
		return mf, fmt.Errorf("fork %s@%d: manifest: %w", v.Model, v.Version, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, blocks.MaxMapBytes))
	rc.Close()
	if err != nil {
		return mf, fmt.Errorf("fork %s@%d: manifest: %w", v.Model, v.Version, err)
	}
	if err := json.Unmarshal(data, &mf); err != nil {
		return mf, fmt.Errorf("fork %s@%d: manifest %s: %w: %w", v.Model, v.Version, v.ManifestURI, model.ErrInvalid, err)
	}
	return mf, nil
}
