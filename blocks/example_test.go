package blocks_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/objstore"
)

// A writer cuts two versions of a live DuckDB file; a reader pulls the
// first, then builds the second over it, fetching only the changed blocks.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "blocks-example-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "m.duckdb")
	db, err := duck.Open(ctx, path, duck.Options{Threads: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	exec := func(q string) {
		if _, err := db.Exec(q); err != nil {
			log.Fatal(err)
		}
	}
	exec("CREATE TABLE t AS SELECT range AS id, random() AS x FROM range(1000000); CHECKPOINT")
	live, _ := os.Open(path) // kept open while DuckDB has the file: see RemapFile
	defer live.Close()
	objs, _ := objstore.NewDir(filepath.Join(dir, "store"))
	store, _ := blocks.NewStore(objs, "m")

	// Version 1: capture between transactions, then upload.
	v1, err := blocks.NewCapture(ctx, live, nil, dir)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := store.Upload(ctx, v1.Map, v1, nil); err != nil {
		log.Fatal(err)
	}
	v1.Close()

	// Version 2: one row more.
	exec("INSERT INTO t VALUES (-1, 0.5); CHECKPOINT")
	v2, err := blocks.NewCapture(ctx, live, v1.Map, dir)
	if err != nil {
		log.Fatal(err)
	}
	defer v2.Close()
	up, err := store.Upload(ctx, v2.Map, v2, v1.Map)
	if err != nil {
		log.Fatal(err)
	}

	// The reader: version 1 from the store, then version 2 over it.
	pulled := filepath.Join(dir, "pulled.duckdb")
	if _, err := blocks.Reconstruct(ctx, v1.Map, pulled, blocks.ReconstructOptions{Root: v1.Map.Root(), Remote: store}); err != nil {
		log.Fatal(err)
	}
	local, err := blocks.OpenFile(ctx, pulled, v1.Map)
	if err != nil {
		log.Fatal(err)
	}
	defer local.Close()
	st, err := blocks.Reconstruct(ctx, v2.Map, pulled, blocks.ReconstructOptions{Root: v2.Map.Root(), Local: []blocks.Source{local}, Remote: store})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("fetched only what was uploaded:", st.Fetched == up.Raw)
	fmt.Println("reused most of version 1:", st.Reused > st.Fetched)
	// Output:
	// fetched only what was uploaded: true
	// reused most of version 1: true
}
