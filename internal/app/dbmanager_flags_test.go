package app

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/envflag"
	"github.com/teatree/teatree/retention"
)

// The db-manager's flags (registerDBManagerFlags) and its Config's
// defaults, as the dbmanager binary combines them.

// dbManagerConfig parses args (after --model m) with the one environment
// variable key=value, fills the defaults and validates, as DBManager
// does.
func dbManagerConfig(t *testing.T, args []string, key, value string) (dbmanager.Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("dbmanager", pflag.ContinueOnError)
	s := &envflag.Set{FS: fs, Getenv: func(k string) string {
		if k == key {
			return value
		}
		return ""
	}}
	var cfg dbmanager.Config
	registerDBManagerFlags(s, &cfg)
	if err := fs.Parse(append([]string{"--model", "m"}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	cfg = cfg.WithDefaults()
	return cfg, cfg.Validate()
}

// TestBlockGraceConfig: the block grace retention defaults to
// retention.DefaultGrace (never 0, which would let GC delete the
// blocks of a version a reader is pulling) and is set by flag or
// TEATREE_BLOCK_GRACE.
func TestBlockGraceConfig(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
		want time.Duration
	}{
		{nil, "", retention.DefaultGrace},
		{nil, "90m", 90 * time.Minute},
		{[]string{"--block-grace", "2h"}, "", 2 * time.Hour},
		{[]string{"--block-grace", "0s"}, "", retention.DefaultGrace},
	} {
		cfg, err := dbManagerConfig(t, c.args, "TEATREE_BLOCK_GRACE", c.env)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.BlockGrace != c.want {
			t.Errorf("args %v env %q: block grace %s, want %s", c.args, c.env, cfg.BlockGrace, c.want)
		}
	}
}

// TestProfilesConfig: column profiles are on by default, off by
// TEATREE_PROFILES=off or --profiles off, and anything else is refused.
func TestProfilesConfig(t *testing.T) {
	for _, c := range []struct {
		args    []string
		env     string
		want    string
		invalid bool
	}{
		{nil, "", "on", false},
		{nil, "off", "off", false},
		{[]string{"--profiles", "off"}, "", "off", false},
		{[]string{"--profiles", "on"}, "off", "on", false},
		{[]string{"--profiles", "no"}, "", "", true},
	} {
		cfg, err := dbManagerConfig(t, c.args, "TEATREE_PROFILES", c.env)
		switch {
		case c.invalid && err == nil:
			t.Errorf("args %v env %q: valid, want an error", c.args, c.env)
		case !c.invalid && err != nil:
			t.Errorf("args %v env %q: %v", c.args, c.env, err)
		case !c.invalid && cfg.Profiles != c.want:
			t.Errorf("args %v env %q: profiles %q, want %q", c.args, c.env, cfg.Profiles, c.want)
		}
	}
}

// TestDBManagerFlagDefaults: with no flag and no environment, the
// db-manager's flags hold dbmanager's Default* constants, the same values
// WithDefaults gives a zero Config.
func TestDBManagerFlagDefaults(t *testing.T) {
	got, err := dbManagerConfig(t, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	want := dbmanager.Config{Model: "m", Holder: got.Holder}.WithDefaults()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("flag defaults (-want +got):\n%s", diff)
	}

}
