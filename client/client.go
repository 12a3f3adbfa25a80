package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/objstore"
)

// Options are the connections and settings of a Client. A method that
// needs a connection that is nil returns an error wrapping ErrNotConfigured.
type Options struct {
	// JetStream submits requests and reads notifications (Submit,
	// SubmitFile, Wait, Watch). Open it with queue.Connect.
	JetStream jetstream.JetStream
	// Control is the Postgres control database: models and versions
	// (Versions, Version, Pull, Query). Open it with controldb.Open.
	Control *controldb.DB
	// Store is the object store: staged payloads (SubmitFile), snapshots
	// and Parquet data files (Pull, Query). Open it with objstore.Open.
	Store objstore.Store
	// CacheDir holds Query's snapshots and Parquet files and the block
	// maps of the files Pull wrote. Default: the user cache directory
	// (os.UserCacheDir) + "/teatree".
	CacheDir string
	// CacheBytes bounds the snapshots and Parquet files under CacheDir
	// (all stacks together); the least recently used ones are evicted
	// after a download, never those this Client opened. Default 4 GiB.
	CacheBytes uint64
	// ClockSkew is how far the clock of the server storing notifications
	// may lag behind the one storing requests (different stream leaders
	// in a cluster), or behind this client's when Wait cannot read the
	// request stream: Wait starts reading notifications this long before
	// its request was stored (or submitted). Default 2 s.
	ClockSkew time.Duration
	// Progress, when set, is called as a snapshot download of version v
	// starts; add is then called with the bytes written as they are
	// written, done once at the end. The teactl progress bar uses it.
	Progress func(v controldb.Version) (add func(n int64), done func())
}

// DefaultCacheBytes is the default of Options.CacheBytes: 4 GiB.
const DefaultCacheBytes = 4 << 30

// DefaultClockSkew is the default of Options.ClockSkew.
const DefaultClockSkew = 2 * time.Second

// ErrNotConfigured is wrapped by the error of a method whose connection
// (Options.JetStream, Control or Store) is nil.
var ErrNotConfigured = errors.New("client: not configured")

// ErrUnreachable is matched (errors.Is) by errors of a service that could
// not be reached or answered with an error of its own (NATS, Postgres, the
// object store), as opposed to bad input, a missing model or version, or
// corrupt data. teactl exits with code 6 on it.
var ErrUnreachable = errors.New("client: service unreachable")

// ErrCorrupt is matched (errors.Is) by the error of a Pull or Query whose
// snapshot or Parquet data file does not match the digest Postgres
// records, or is incomplete in the object store. Nothing was written.
var ErrCorrupt = errors.New("client: corrupt")

// marked is err, matched by errors.Is also as kind, its message
// unchanged.
type marked struct{ err, kind error }

func (m marked) Error() string        { return m.err.Error() }
func (m marked) Unwrap() error        { return m.err }
func (m marked) Is(target error) bool { return target == m.kind }

func mark(err, kind error) error {
	if err == nil || errors.Is(err, kind) {
		return err
	}
	return marked{err, kind}
}

// unreachable returns err marked as ErrUnreachable (nil for nil), its
// message unchanged.
func unreachable(err error) error { return mark(err, ErrUnreachable) }

// Client submits requests to teatree and reads its versions. Its methods
// are safe for concurrent use. It does not own the connections in Options:
// closing them is the caller's.
type Client struct {
	opts Options

	mu    sync.Mutex
	inUse []string // cache files this client opened: never evicted by it
}

// New returns a Client over opts, with defaults filled in. It does not
// contact any service.
func New(opts Options) (*Client, error) {
	if opts.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("client: cache directory: %w (set Options.CacheDir)", err)
		}
		opts.CacheDir = filepath.Join(d, "teatree")
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.ClockSkew == 0 {
		opts.ClockSkew = DefaultClockSkew
	}
	return &Client{opts: opts}, nil
}

func (c *Client) js() (jetstream.JetStream, error) {
	if c.opts.JetStream == nil {
		return nil, fmt.Errorf("%w: no NATS connection (Options.JetStream)", ErrNotConfigured)
	}
	return c.opts.JetStream, nil
}

func (c *Client) ctl() (*controldb.DB, error) {
	if c.opts.Control == nil {
		return nil, fmt.Errorf("%w: no Postgres control database (Options.Control)", ErrNotConfigured)
	}
	return c.opts.Control, nil
}

func (c *Client) store() (objstore.Store, error) {
	if c.opts.Store == nil {
		return nil, fmt.Errorf("%w: no object store (Options.Store)", ErrNotConfigured)
	}
	return c.opts.Store, nil
}

// use records path as opened by this client (never evicted by it).
func (c *Client) use(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inUse = append(c.inUse, path)
}

func (c *Client) used() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.inUse...)
}
