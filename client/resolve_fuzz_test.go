package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// FuzzResolve: any MODEL[@N|@PIN] a user types is either refused as
// invalid with one line, or read as a valid model id with a version >= 0
// (a pin name then needs Postgres: ErrNotConfigured here); the cancel key
// of any valid model and request id decodes back (queue.CancelKey).
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"flights", "flights@3", "flights@release", "flights@", "@3", "flights@0", "flights@2x", "a@b@c", "Flights@1"} {
		f.Add(s)
	}
	c, err := client.New(client.Options{CacheDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		m, n, err := c.Resolve(context.Background(), spec)
		switch {
		case err == nil:
			if model.ValidateID(m) != nil || n < 0 || !strings.HasPrefix(spec, m) {
				t.Fatalf("Resolve(%q) = %q, %d", spec, m, n)
			}
		case errors.Is(err, client.ErrNotConfigured):
		case errors.Is(err, model.ErrInvalid):
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("Resolve(%q): error of several lines: %v", spec, err)
			}
		default:
			t.Fatalf("Resolve(%q): %v", spec, err)
		}
		if model.ValidateRequestID(spec) == nil {
			k := queue.CancelKey("m", spec)
			if strings.ContainsAny(k[2:], ".:") || k[:2] != "m." {
				t.Fatalf("CancelKey(m, %q) = %q", spec, k)
			}
		}
	})
}
