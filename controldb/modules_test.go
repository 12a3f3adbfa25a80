package controldb_test

import (
	"context"
	"testing"

	"github.com/teatree/teatree/controldb"
)

func TestModules(t *testing.T) {
	db, ctx := open(t), context.Background()
	if _, err := db.CreateModel(ctx, controldb.Model{ID: "geo"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []controldb.Module{
		{Model: "geo", Name: "gc", Digest: sha('a'), Exports: []string{"teatree_process"}},
		{Model: "geo", Name: "gc", Digest: sha('a'), Exports: []string{"teatree_process"}}, // again: one row
		{Model: "geo", Name: "gc", Digest: sha('b')},
		{Model: "geo", Name: "filter", Digest: sha('c')},
	} {
		if err := db.RecordModule(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := db.ListModules(ctx, "geo")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Name+"="+m.Digest[:1])
		if m.Registered.IsZero() || m.Model != "geo" {
			t.Errorf("module %+v", m)
		}
	}
	if want := "filter=c gc=b gc=a"; join(got) != want {
		t.Errorf("modules %v, want %s (by name, latest first)", got, want)
	}
	if err := db.RecordModule(ctx, controldb.Module{Model: "geo", Name: "bad name", Digest: sha('a')}); err == nil {
		t.Error("a bad name was recorded")
	}
	if err := db.RecordModule(ctx, controldb.Module{Model: "nope", Name: "gc", Digest: sha('a')}); err == nil {
		t.Error("a module of a missing model was recorded")
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}
